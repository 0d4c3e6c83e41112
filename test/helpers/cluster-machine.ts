// Drives one pure cluster machine by hand in tests: feeds events at a clock the
// test moves, keeps every action, and answers the usual questions about them.
import assert from 'node:assert/strict';
import { initialState, poolViews, step, type MachineState } from '../../src/cluster/machine';
import type {
  FencingPolicy, MachineAction, MachineConfig, MachineEvent, PeerMessage, PersistedState, PoolRecord, PoolView, VolumeFacts,
} from '../../src/cluster/machine-types';

type Without<E, K extends string> = E extends unknown ? Omit<E, K> : never;
export type EventBody = Without<MachineEvent, 'now'>;
export type ActionOf<T extends MachineAction['type']> = Extract<MachineAction, { type: T }>;

export const LEASE = 1000;
export const MARGIN = 200;
export const START_WAIT = 3000;
export const FENCE_RETRY = 5000;
export const CLAIM_RETRY = 2000;
export const WITNESS_TIMEOUT = 500;

/** alpha and beta; p0 (volume v0) prefers alpha, p1 (volume v1) prefers beta */
export function config(self: 'alpha' | 'beta', policy: FencingPolicy, more: Partial<MachineConfig> = {}): MachineConfig {
  return {
    self, peer: self === 'alpha' ? 'beta' : 'alpha', policy,
    pools: [
      { name: 'p0', volumes: ['v0'], preferredNode: 'alpha', autoFailback: false },
      { name: 'p1', volumes: ['v1'], preferredNode: 'beta', autoFailback: false },
    ],
    leaseMs: LEASE, takeoverMarginMs: MARGIN, fenceRetryMs: FENCE_RETRY, claimRetryMs: CLAIM_RETRY, startWaitMs: START_WAIT,
    witnessTimeoutMs: WITNESS_TIMEOUT, ...more,
  };
}

export const IN_SYNC: VolumeFacts = { diskState: 'UpToDate', connected: true, inSync: true };
export const APART: VolumeFacts = { diskState: 'UpToDate', connected: false, inSync: false };

export class Driver {
  state: MachineState;
  now = 1000;
  /** every action so far */
  readonly log: MachineAction[] = [];
  private nextId = 1;

  constructor(readonly cfg: MachineConfig) {
    this.state = initialState(cfg);
  }

  /** Feeds one event at the current clock (or `at`) and returns its actions. */
  ev(body: EventBody, at?: number): MachineAction[] {
    if (at !== undefined) this.now = at;
    const r = step(this.cfg, this.state, { ...body, now: this.now } as MachineEvent);
    this.state = r.state;
    this.log.push(...r.actions);
    return r.actions;
  }

  start(persisted: PersistedState | null = null): MachineAction[] {
    return this.ev({ type: 'start', persisted });
  }

  tick(at: number, peerAckSentAt: number | null = null, witnessAckSentAt: number | null = null): MachineAction[] {
    return this.ev({ type: 'tick', peerAckSentAt, witnessAckSentAt }, at);
  }

  volumes(facts: VolumeFacts, names: readonly string[] = this.cfg.pools.flatMap((p) => p.volumes)): MachineAction[] {
    return names.flatMap((name) => this.ev({ type: 'volume', name, facts }));
  }

  peerState(pools: Record<string, PoolRecord>, maintenance = false): MachineAction[] {
    return this.ev({ type: 'peer-message', message: { kind: 'state', pools, maintenance } });
  }

  command(command: Extract<EventBody, { type: 'command' }>['command']): { id: number; actions: MachineAction[] } {
    const id = this.nextId++;
    return { id, actions: this.ev({ type: 'command', id, command }) };
  }

  alone(volume: string): { id: number; actions: MachineAction[] } {
    const id = this.nextId++;
    return { id, actions: this.ev({ type: 'alone-request', volume, id }) };
  }

  pool(name: string): PoolView {
    const v = poolViews(this.state).find((p) => p.name === name);
    assert.ok(v !== undefined, `no pool ${name}`);
    return v;
  }

  /** Our records as the peer would receive them. */
  records(): Record<string, PoolRecord> {
    return Object.fromEntries(poolViews(this.state).map((p) => [p.name, { owner: p.owner, term: p.term }]));
  }

  /**
   * Start, volumes in sync, meet the peer holding `peerRecords` (default: the same as ours),
   * and complete every activation the meeting starts.
   */
  meet(peerRecords?: Record<string, PoolRecord>, persisted: PersistedState | null = null): void {
    this.start(persisted);
    this.volumes(IN_SYNC);
    this.ev({ type: 'peer-up', incarnation: 7 });
    const acts = this.peerState(peerRecords ?? this.records());
    for (const a of only(acts, 'activate')) this.ev({ type: 'activated', pool: a.pool, ok: true });
    // a restarted machine clears the witness's flags at its first meeting in sync
    for (const w of only(acts, 'witness')) this.ev({ type: 'witness-reply', request: w.request, granted: true, reason: 'ok', seq: w.seq });
  }
}

export function only<T extends MachineAction['type']>(actions: readonly MachineAction[], type: T): ActionOf<T>[] {
  return actions.filter((a): a is ActionOf<T> => a.type === type);
}

export function one<T extends MachineAction['type']>(actions: readonly MachineAction[], type: T): ActionOf<T> {
  const found = only(actions, type);
  assert.equal(found.length, 1, `expected one ${type} action in ${JSON.stringify(actions)}`);
  return found[0] as ActionOf<T>;
}

export function none(actions: readonly MachineAction[], type: MachineAction['type']): void {
  assert.deepEqual(only(actions, type), [], `expected no ${type} action`);
}

export const logged = (actions: readonly MachineAction[], event: string): boolean => only(actions, 'log').some((l) => l.event === event);

export function decision(actions: readonly MachineAction[], id: number): boolean {
  const d = only(actions, 'alone-decision').filter((a) => a.id === id);
  assert.equal(d.length, 1, `expected one decision for request ${id} in ${JSON.stringify(actions)}`);
  return (d[0] as ActionOf<'alone-decision'>).allow;
}

export function result(actions: readonly MachineAction[], id: number): ActionOf<'command-result'> {
  const r = only(actions, 'command-result').filter((a) => a.id === id);
  assert.equal(r.length, 1, `expected one result for command ${id} in ${JSON.stringify(actions)}`);
  return r[0] as ActionOf<'command-result'>;
}

/** Messages from one machine to the other, in order. */
export const messages = (actions: readonly MachineAction[]): PeerMessage[] => only(actions, 'send-peer').map((a) => a.message);
