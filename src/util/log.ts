// One line per event on stderr: time, level, component, message, then key=value fields.
export type Level = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

function fmt(fields: Record<string, unknown> | undefined): string {
  if (fields === undefined) return '';
  let s = '';
  for (const [k, v] of Object.entries(fields)) {
    const text = typeof v === 'string' ? (/^[\w.:/@-]+$/.test(v) ? v : JSON.stringify(v)) : String(v);
    s += ` ${k}=${text}`;
  }
  return s;
}

export function createLogger(component: string, sink: (line: string) => void = (l) => process.stderr.write(l), debug = false): Logger {
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (level === 'debug' && !debug) return;
    sink(`${new Date().toISOString()} ${level.padEnd(5)} ${component}: ${msg}${fmt(fields)}\n`);
  };
  return {
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    debug: (m, f) => emit('debug', m, f),
    child: (c) => createLogger(`${component}/${c}`, sink, debug),
  };
}
