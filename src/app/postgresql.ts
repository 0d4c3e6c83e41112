// The PostgreSQL module: the data directory lives on the pool's filesystem;
// initdb on first use; pg_ctl start listening on the pool's floating IPs;
// pg_ctl stop (fast, then immediate, then kill); healthy when pg_isready
// answers on the floating IP and a query runs. After a failover PostgreSQL's
// own crash recovery replays its WAL, which the mirror kept.
//
// The data directory is on a filesystem this very process serves (through
// nbdfuse): a synchronous file call on it from the daemon would block the
// event loop that has to answer it. Everything on the mount is done by child
// processes; the daemon only waits for them.
import fs from 'node:fs';
import path from 'node:path';
import type { CheckResult } from './checker';
import type { PostgresqlAppConfig } from './config';
import { appEnvironment, type AppContext, type AppDriver, type Probe } from './driver';
import { describeResult, keepTail, runProgram, type ScriptResult } from './script';

/** The newest installed server's binaries (Debian keeps them out of PATH). */
export function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'pg_ctl'))) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (versions.length === 0) throw new Error('PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): apt-get install postgresql');
  return path.join(root, versions[0] as string, 'bin');
}

/** uid and gid of a local user, from /etc/passwd */
export function userIds(user: string): { uid: number; gid: number } {
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === user) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new Error(`no local user ${JSON.stringify(user)} to run PostgreSQL as`);
}


export class PostgresqlApp implements AppDriver {
  readonly probes: readonly Probe[];
  private output = '';
  private readonly dataDir: string;
  private readonly env: Record<string, string>;

  constructor(private readonly cfg: PostgresqlAppConfig, private readonly ctx: AppContext) {
    if (ctx.mountpoint === null) throw new Error(`application ${cfg.name}: postgresql needs the pool's filesystem`);
    this.dataDir = path.join(ctx.mountpoint, cfg.dataDir);
    this.env = { ...appEnvironment(ctx, cfg.name), PGDATA: this.dataDir };
    const host = ctx.floatingIps[0] ?? '127.0.0.1';
    this.probes = [
      { name: `pg_isready ${host}:${cfg.port}`, timing: cfg.check, run: () => this.isReady(host) },
      { name: 'query select 1', timing: cfg.check, run: () => this.query() },
    ];
  }

  private idsMemo: { uid: number; gid: number } | undefined;
  private binDirMemo: string | undefined;

  /** looked up once: the checks run every few seconds for as long as the pool is up */
  private get ids(): { uid: number; gid: number } {
    return (this.idsMemo ??= userIds(this.cfg.user));
  }

  private get binDir(): string {
    return (this.binDirMemo ??= postgresBinDir());
  }

  private as(file: string, args: readonly string[], timeoutMs: number): Promise<ScriptResult> {
    const ids = this.ids;
    return runProgram(path.join(this.binDir, file), args, { timeoutMs, env: { ...this.env, HOME: this.cfg.socketDir }, cwd: '/', ...ids });
  }

  private get logFile(): string { return path.join(this.dataDir, 'server.log'); }

  /** a shell script on the mount, as root or as the server's user; D is the data directory */
  private onMount(script: string, asUser: boolean, env: Record<string, string> = {}): Promise<ScriptResult> {
    const ids = asUser ? this.ids : {};
    return runProgram('/bin/sh', ['-c', script], { timeoutMs: 60_000, env: { ...this.env, ...env, D: this.dataDir }, cwd: '/', ...ids });
  }

  private async logTail(): Promise<string> {
    return (await this.onMount('tail -c 1500 "$D/server.log" 2>/dev/null', false)).output;
  }

  async start(): Promise<void> {
    const ids = this.ids;
    await fs.promises.mkdir(this.cfg.socketDir, { recursive: true, mode: 0o2775 });
    await fs.promises.chown(this.cfg.socketDir, ids.uid, ids.gid);
    if ((await this.onMount('test -f "$D/PG_VERSION"', false)).code !== 0) await this.initdb();
    await this.writeSettings();
    await this.removeStaleLock();
    const r = await this.as('pg_ctl', ['-D', this.dataDir, '-l', this.logFile, '-w', '-t', String(Math.ceil(this.cfg.startTimeoutMs / 1000)), 'start'], this.cfg.startTimeoutMs + 5000);
    const log = await this.logTail();
    this.output = `${r.output}${log}`;
    if (r.code !== 0) throw new Error(`${describeResult(`pg_ctl start of ${this.cfg.name}`, r)}\n${log}`);
  }

  /** First use: an empty data directory becomes a cluster whose TCP clients must authenticate. */
  private async initdb(): Promise<void> {
    const ids = this.ids;
    if ((await this.onMount('[ ! -e "$D" ] || [ -z "$(ls -A "$D")" ]', false)).code !== 0) {
      throw new Error(`${this.dataDir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): not initialising over it`);
    }
    const made = await this.onMount(`install -d -o ${ids.uid} -g ${ids.gid} -m 700 "$D"`, false);
    if (made.code !== 0) throw new Error(describeResult(`creating ${this.dataDir}`, made));
    const args = ['-D', this.dataDir, '-U', this.cfg.user, '--auth-local=peer', '--auth-host=scram-sha-256', '--encoding=UTF8', '--locale=C'];
    let pwCopy: string | null = null;
    if (this.cfg.passwordFile !== null) {
      // initdb runs as the server's user, who may not read the original
      pwCopy = path.join(this.cfg.socketDir, `.${this.ctx.pool}.${this.cfg.name}.pw`);
      const pw = (await fs.promises.readFile(this.cfg.passwordFile, 'utf8')).split('\n')[0];
      await fs.promises.writeFile(pwCopy, `${pw}\n`, { mode: 0o600 });
      await fs.promises.chown(pwCopy, ids.uid, ids.gid);
      args.push(`--pwfile=${pwCopy}`);
    }
    try {
      const r = await this.as('initdb', args, 10 * 60_000);
      this.output = r.output;
      if (r.code !== 0) throw new Error(describeResult(`initdb of ${this.cfg.name}`, r));
    } finally {
      if (pwCopy !== null) await fs.promises.rm(pwCopy, { force: true });
    }
    const hba = this.cfg.allowFrom.map((net) => `host all all ${net} scram-sha-256`).join('\n');
    // synced: a failover seconds later must not find the files half written (the page cache dies with the node)
    const r = await this.onMount('printf "%s" "$HBA" >> "$D/pg_hba.conf" && printf "%s" "$CONF" >> "$D/postgresql.conf" && sync "$D/pg_hba.conf" "$D/postgresql.conf"', true, {
      HBA: `\n# clients over the pool's floating IPs (tandem)\n${hba}\n`,
      CONF: "\n# where this node serves it: rewritten by tandem at every start\ninclude_if_exists = 'tandem.conf'\n",
    });
    if (r.code !== 0) throw new Error(describeResult(`configuring ${this.dataDir}`, r));
  }

  /** the addresses are the pool's, the socket this node's: written at every start, on whichever node */
  private async writeSettings(): Promise<void> {
    const listen = this.ctx.floatingIps.length > 0 ? this.ctx.floatingIps.join(',') : 'localhost';
    const text = [`listen_addresses = '${listen}'`, `port = ${this.cfg.port}`, `unix_socket_directories = '${this.cfg.socketDir}'`, ''].join('\n');
    const r = await this.onMount('umask 077 && printf "%s" "$TEXT" > "$D/tandem.conf.new" && sync "$D/tandem.conf.new" && mv "$D/tandem.conf.new" "$D/tandem.conf" && sync "$D"', true, { TEXT: text });
    if (r.code !== 0) throw new Error(describeResult(`writing ${this.dataDir}/tandem.conf`, r));
  }

  async stop(): Promise<void> {
    const t = String(Math.max(1, Math.floor(this.cfg.stopTimeoutMs / 2000)));
    let r = await this.as('pg_ctl', ['-D', this.dataDir, '-m', 'fast', '-w', '-t', t, 'stop'], this.cfg.stopTimeoutMs);
    this.output = keepTail(`${this.output}${r.output}`);
    if (r.code === 0 || !alive(await this.postmasterPid())) return;
    r = await this.as('pg_ctl', ['-D', this.dataDir, '-m', 'immediate', '-w', '-t', t, 'stop'], this.cfg.stopTimeoutMs);
    this.output = keepTail(`${this.output}${r.output}`);
    const pid = await this.postmasterPid();
    if (pid !== null && alive(pid)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }

  /**
   * After a failover postmaster.pid names a process of the other node. Its number may belong to
   * anything here (or to a zombie nobody reaped yet), and PostgreSQL would refuse to start: the
   * file goes unless that process is a postgres serving this very directory. Fencing is what
   * guarantees no other node still runs on it.
   */
  private async removeStaleLock(): Promise<void> {
    const pid = await this.postmasterPid();
    if (pid === null || servesHere(pid, this.dataDir)) return;
    const r = await this.onMount('rm -f "$D/postmaster.pid"', false);
    if (r.code !== 0) throw new Error(describeResult(`removing the stale ${this.dataDir}/postmaster.pid`, r));
    this.output = `removed postmaster.pid of process ${pid}, which does not run here\n`;
  }

  private async postmasterPid(): Promise<number | null> {
    const r = await this.onMount('head -n 1 "$D/postmaster.pid"', false);
    const pid = Number(r.output.trim());
    return r.code === 0 && Number.isInteger(pid) && pid > 1 ? pid : null;
  }

  private async isReady(host: string): Promise<CheckResult> {
    const s = Math.max(1, Math.floor(this.cfg.check.timeoutMs / 1000));
    const r = await this.as('pg_isready', ['-h', host, '-p', String(this.cfg.port), '-t', String(s)], this.cfg.check.timeoutMs + 1000);
    return { ok: r.code === 0, message: r.output.trim() || describeResult('pg_isready', r) };
  }

  private async query(): Promise<CheckResult> {
    const r = await this.as('psql', ['-X', '-h', this.cfg.socketDir, '-p', String(this.cfg.port), '-U', this.cfg.user, '-d', 'postgres', '-Atc', 'select 1'], this.cfg.check.timeoutMs);
    return r.code === 0 && r.output.trim() === '1' ? { ok: true, message: 'select 1 answered' } : { ok: false, message: describeResult('select 1', r, 300) };
  }

  lastOutput(): string {
    return this.output;
  }
}

function alive(pid: number | null): boolean {
  if (pid === null) return false;
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/** pid is a live postgres whose working directory is dataDir (the postmaster chdirs there) */
function servesHere(pid: number, dataDir: string): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.split(') ')[1]?.startsWith('Z') === true) return false;
    const exe = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '';
    return path.basename(exe) === 'postgres' && fs.readlinkSync(`/proc/${pid}/cwd`) === dataDir;
  } catch {
    return false;
  }
}
