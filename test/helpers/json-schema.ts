// A small JSON Schema (draft 2020-12) validator for the keywords docs/status.schema.json uses:
// type (one or a list), enum, properties, required, additionalProperties (false or a schema),
// items, minItems, maxItems, minimum, anyOf, $ref to "#/…" inside the same document, and the
// annotations ($schema, $id, $comment, title, description, $defs). Any other keyword is an
// error, so the schema cannot lean on a rule this validator would silently skip.
//
// Besides the errors it records which schema locations were applied, so a test can tell
// whether its instances reached the optional branches at all.

export type Schema = { readonly [k: string]: unknown } | boolean;

const ANNOTATIONS = new Set(['$schema', '$id', '$comment', 'title', 'description', '$defs']);
const ASSERTIONS = new Set(['type', 'enum', 'properties', 'required', 'additionalProperties', 'items', 'minItems', 'maxItems', 'minimum', 'anyOf', '$ref']);
const TYPES = new Set(['null', 'boolean', 'object', 'array', 'number', 'integer', 'string']);

export interface SchemaCheck {
  /** "$.volumes[0].resync.doneBytes: …", one per violation; empty when the instance is valid */
  readonly errors: string[];
  /** schema locations ("#/$defs/resync", "#/properties/peerApi") applied to some part of the instance */
  readonly visited: Set<string>;
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function hasType(v: unknown, t: string): boolean {
  switch (t) {
    case 'null': return v === null;
    case 'boolean': return typeof v === 'boolean';
    case 'string': return typeof v === 'string';
    case 'number': return typeof v === 'number' && Number.isFinite(v);
    case 'integer': return typeof v === 'number' && Number.isInteger(v);
    case 'array': return Array.isArray(v);
    case 'object': return typeof v === 'object' && v !== null && !Array.isArray(v);
    default: return false;
  }
}

function same(a: unknown, b: unknown): boolean {
  return a === b || (typeof a === 'object' && a !== null && JSON.stringify(a) === JSON.stringify(b));
}

function key(k: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`;
}

/** Follows "#/a/b" (JSON Pointer, with ~0 and ~1) inside the root schema. */
function resolveRef(root: Schema, ref: string, at: string): Schema {
  if (!ref.startsWith('#')) throw new Error(`${at}: $ref ${ref} is not inside this document`);
  let node: unknown = root;
  for (const raw of ref.slice(1).split('/').slice(1)) {
    const part = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (typeof node !== 'object' || node === null || !(part in node)) throw new Error(`${at}: $ref ${ref} does not resolve`);
    node = (node as Record<string, unknown>)[part];
  }
  if (typeof node !== 'boolean' && (typeof node !== 'object' || node === null || Array.isArray(node))) throw new Error(`${at}: $ref ${ref} is not a schema`);
  return node as Schema;
}

class Run {
  readonly errors: string[] = [];
  readonly visited = new Set<string>();
  constructor(private readonly root: Schema) {}

  check(schema: Schema, where: string, v: unknown, path: string): void {
    this.visited.add(where);
    if (schema === true) return;
    if (schema === false) { this.errors.push(`${path}: nothing is allowed here`); return; }
    for (const k of Object.keys(schema)) {
      if (!ANNOTATIONS.has(k) && !ASSERTIONS.has(k)) throw new Error(`${where}: keyword ${k} is not supported by this validator`);
    }
    const s = schema as Record<string, unknown>;
    if (s.$ref !== undefined) {
      if (typeof s.$ref !== 'string') throw new Error(`${where}: $ref must be a string`);
      this.check(resolveRef(this.root, s.$ref, where), s.$ref, v, path);
    }
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? s.type : [s.type];
      for (const t of types) if (typeof t !== 'string' || !TYPES.has(t)) throw new Error(`${where}: unknown type ${String(t)}`);
      if (!types.some((t) => hasType(v, t as string))) {
        this.errors.push(`${path}: expected ${types.join(' or ')}, got ${typeOf(v)}${typeOf(v) === 'number' ? ` ${String(v)}` : ''}`);
        return;
      }
    }
    if (s.enum !== undefined) {
      if (!Array.isArray(s.enum)) throw new Error(`${where}: enum must be a list`);
      if (!s.enum.some((e) => same(e, v))) this.errors.push(`${path}: ${JSON.stringify(v)} is not one of ${JSON.stringify(s.enum)}`);
    }
    if (s.minimum !== undefined && typeof v === 'number' && v < (s.minimum as number)) this.errors.push(`${path}: ${v} is below the minimum ${String(s.minimum)}`);
    if (s.anyOf !== undefined) this.anyOf(s.anyOf, where, v, path);
    if (hasType(v, 'object')) this.object(s, where, v as Record<string, unknown>, path);
    if (Array.isArray(v)) this.array(s, where, v, path);
  }

  private anyOf(branches: unknown, where: string, v: unknown, path: string): void {
    if (!Array.isArray(branches) || branches.length === 0) throw new Error(`${where}: anyOf must be a non-empty list`);
    const failures: string[] = [];
    for (const [i, b] of branches.entries()) {
      const sub = new Run(this.root);
      sub.check(b as Schema, `${where}/anyOf/${i}`, v, path);
      if (sub.errors.length === 0) {
        for (const x of sub.visited) this.visited.add(x);
        return;
      }
      failures.push(`[${i}] ${sub.errors.join('; ')}`);
    }
    this.errors.push(`${path}: matches none of anyOf: ${failures.join(' | ')}`);
  }

  private object(s: Record<string, unknown>, where: string, v: Record<string, unknown>, path: string): void {
    const props = (s.properties ?? {}) as Record<string, Schema>;
    if (typeof props !== 'object' || props === null || Array.isArray(props)) throw new Error(`${where}: properties must be an object`);
    if (s.required !== undefined) {
      if (!Array.isArray(s.required)) throw new Error(`${where}: required must be a list`);
      for (const r of s.required as string[]) {
        if (!(r in props)) throw new Error(`${where}: required ${r} is not among the properties`);
        if (!Object.prototype.hasOwnProperty.call(v, r)) this.errors.push(`${path}: required property "${r}" is missing`);
      }
    }
    for (const [k, val] of Object.entries(v)) {
      if (Object.prototype.hasOwnProperty.call(props, k)) {
        this.check(props[k] as Schema, `${where}/properties/${k}`, val, path + key(k));
      } else if (s.additionalProperties === false) {
        this.errors.push(`${path}: undeclared property "${k}" (the schema closes this object)`);
      } else if (s.additionalProperties !== undefined && s.additionalProperties !== true) {
        this.check(s.additionalProperties as Schema, `${where}/additionalProperties`, val, path + key(k));
      }
    }
  }

  private array(s: Record<string, unknown>, where: string, v: unknown[], path: string): void {
    if (typeof s.minItems === 'number' && v.length < s.minItems) this.errors.push(`${path}: ${v.length} items, at least ${s.minItems} expected`);
    if (typeof s.maxItems === 'number' && v.length > s.maxItems) this.errors.push(`${path}: ${v.length} items, at most ${s.maxItems} expected`);
    if (s.items !== undefined) v.forEach((x, i) => this.check(s.items as Schema, `${where}/items`, x, `${path}[${i}]`));
  }
}

/** Validates instance against schema; throws only when the schema itself uses something unsupported. */
export function validate(schema: Schema, instance: unknown): SchemaCheck {
  const run = new Run(schema);
  run.check(schema, '#', instance, '$');
  return { errors: run.errors, visited: run.visited };
}

/**
 * Walks every subschema once (not an instance): throws on an unsupported keyword, a $ref that
 * does not resolve, a required key that is not a property. Returns each object schema's location
 * and whether it is closed, so a test can list what the schema leaves open.
 */
export function lintSchema(root: Schema): Array<{ where: string; closed: boolean }> {
  const objects: Array<{ where: string; closed: boolean }> = [];
  const walk = (s: unknown, where: string): void => {
    if (typeof s === 'boolean') return;
    if (typeof s !== 'object' || s === null || Array.isArray(s)) throw new Error(`${where}: not a schema`);
    const o = s as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!ANNOTATIONS.has(k) && !ASSERTIONS.has(k)) throw new Error(`${where}: keyword ${k} is not supported by this validator`);
    if (typeof o.$ref === 'string') resolveRef(root, o.$ref, where);
    const props = o.properties as Record<string, unknown> | undefined;
    if (Array.isArray(o.required)) for (const r of o.required as string[]) if (props === undefined || !(r in props)) throw new Error(`${where}: required ${r} is not among the properties`);
    const types = o.type === undefined ? [] : Array.isArray(o.type) ? o.type : [o.type];
    if (types.includes('object')) objects.push({ where, closed: o.additionalProperties === false });
    for (const [k, sub] of Object.entries(props ?? {})) walk(sub, `${where}/properties/${k}`);
    if (o.additionalProperties !== undefined) walk(o.additionalProperties, `${where}/additionalProperties`);
    if (o.items !== undefined) walk(o.items, `${where}/items`);
    if (Array.isArray(o.anyOf)) o.anyOf.forEach((b, i) => walk(b, `${where}/anyOf/${i}`));
    for (const [k, sub] of Object.entries((o.$defs ?? {}) as Record<string, unknown>)) walk(sub, `${where}/$defs/${k}`);
  };
  walk(root, '#');
  return objects;
}
