// Tandem console: reads the status stream of the node that served it (and of
// its peer, when the browser can reach it) and sends commands to that node only.
// Every request carries the API token the operator signed in with (kept in this
// tab's sessionStorage); the event streams are read with fetch, since an
// EventSource cannot send it. Plain browser JavaScript, served as it is: no
// build step, no dependencies.

const params = new URLSearchParams(location.search);
/** a keep-alive comment comes every 15 s: a stream silent for this long is dead */
const STALE_WATCHDOG_MS = 45_000;
const RETRY_MAX_MS = 5000;
/** the node sends one status at a time, well below this; more unparsed text is not our node */
const STREAM_BUFFER_MAX = 16 * 1024 * 1024;
const ACTIVITY_KEPT = 2000;
const ACTIVITY_SHOWN = 500;
const TOKEN_KEY = 'tandem-api-token';

/** what each node said last, by node name: { status, live, lastAt, api, self, problem } */
const views = new Map();
let selfName = null;
let selfFeed = null;
let peerFeed = null;
let peerApi = null;
let firstRender = true;
const previous = new Map();

// ------------------------------------------------------------------ the token

/** the token when sessionStorage refuses to keep it (a private window's policy): it lasts until the page is left */
let memoryToken = null;

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? memoryToken;
  } catch {
    return memoryToken;
  }
}

function setToken(t) {
  try {
    if (t === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, t);
  } catch {
    // storage refused: memoryToken keeps it
  }
  memoryToken = t;
}

function authHeaders() {
  const t = token();
  return t ? { authorization: `Bearer ${t}` } : {};
}

/** `#token=…` (the link tandem demo prints) signs in; the token then leaves the address bar and the history. */
function takeTokenFromFragment() {
  const m = /^#token=([^&]*)/.exec(location.hash);
  if (m === null) return false;
  let t = '';
  try { t = decodeURIComponent(m[1]).trim(); } catch { t = ''; }
  history.replaceState(null, '', location.pathname + location.search);
  if (t === '') return false;
  setToken(t);
  return true;
}

// ------------------------------------------------------------------ formatting
function esc(v) {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function size(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '?';
  for (const [u, f] of [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]]) {
    if (n >= f) return `${(n / f).toFixed(n % f === 0 ? 0 : 1)} ${u}`;
  }
  return `${n} B`;
}

function clock(t) {
  if (t === null || t === undefined) return '?';
  return new Date(t).toLocaleTimeString([], { hour12: false });
}

function duration(s) {
  if (s === null || s === undefined) return 'unknown';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function percent(r) {
  return r.totalBytes > 0 ? Math.floor((r.doneBytes / r.totalBytes) * 100) : 100;
}

function apiUrl(api) {
  return `${location.protocol}//${api}`;
}

// ------------------------------------------------------------------ event streams

/**
 * One node's event stream (text/event-stream), read with fetch so it carries the token.
 * Retries what breaks with a growing delay; a refused token is reported, not retried.
 */
class Feed {
  constructor(base, handlers) {
    this.base = base;
    this.h = handlers;
    this.ctrl = null;
    this.timer = null;
    this.attempt = 0;
    this.retryMs = 1000;
    this.lastEventAt = Date.now();
    this.watchdog = setInterval(() => {
      if (this.ctrl !== null && Date.now() - this.lastEventAt > STALE_WATCHDOG_MS) this.reopen();
    }, 5000);
  }

  open() {
    this.timer = null;
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    this.lastEventAt = Date.now();
    this.read(ctrl).catch(() => {
      if (this.ctrl !== ctrl) return;
      this.ctrl = null;
      this.h.lost();
      this.retryLater();
    });
  }

  async read(ctrl) {
    const res = await fetch(`${this.base}/api/v1/events`, { headers: { accept: 'text/event-stream', ...authHeaders() }, cache: 'no-store', signal: ctrl.signal });
    if (res.status === 401) {
      const answer = await res.json().catch(() => null);
      if (this.ctrl !== ctrl) return;
      this.ctrl = null;
      this.h.refused(answer?.error?.message ?? 'HTTP 401');
      return;
    }
    if (!res.ok || res.body === null) throw new Error(`HTTP ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (this.ctrl !== ctrl) { reader.cancel().catch(() => undefined); return; }
      if (done) throw new Error('the stream ended');
      // a keep-alive comment counts too: the stream is alive
      this.lastEventAt = Date.now();
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        this.dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
      if (buffer.length > STREAM_BUFFER_MAX) throw new Error('an event larger than the console reads');
    }
  }

  /** One event's lines (the node never sends \r, and each data is one line of JSON). */
  dispatch(block) {
    let name = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
      else if (field === 'retry' && /^\d+$/.test(value)) this.retryMs = Number(value);
    }
    if (data.length === 0) return;
    const text = data.join('\n');
    if (name === 'status') {
      let st;
      try { st = JSON.parse(text); } catch { return; }
      this.attempt = 0;
      this.h.status(st);
    } else if (name === 'activity') {
      try { this.h.activity(JSON.parse(text)); } catch { /* a malformed entry is skipped */ }
    }
  }

  reopen() {
    this.abort();
    this.h.lost();
    this.retryLater();
  }

  abort() {
    const c = this.ctrl;
    this.ctrl = null;
    c?.abort();
  }

  retryLater() {
    if (this.timer !== null) return;
    const wait = Math.min(this.retryMs * 2 ** this.attempt, RETRY_MAX_MS);
    this.attempt++;
    this.timer = setTimeout(() => this.open(), wait);
  }

  stop() {
    this.abort();
    clearTimeout(this.timer);
    this.timer = null;
    clearInterval(this.watchdog);
  }
}

function viewOf(name) {
  let v = views.get(name);
  if (v === undefined) {
    v = { status: null, live: false, lastAt: null, api: null, self: false, problem: null };
    views.set(name, v);
  }
  return v;
}

function onStatus(st, self) {
  if (self) { selfName = st.node; selfLostAt = null; }
  const v = viewOf(st.node);
  v.status = st;
  v.live = true;
  v.lastAt = Date.now();
  v.self = self;
  v.problem = null;
  if (self) v.api = location.host;
  for (const a of st.clusterState?.activity ?? []) addActivity(st.node, a);
  if (self) startPeer(st);
  scheduleRender();
}

function startPeer(st) {
  const peerName = st.peer.name;
  const v = viewOf(peerName);
  const wanted = params.get('peer') ?? st.peerApi ?? null;
  if (wanted === null || !/^[A-Za-z0-9.:[\]-]+$/.test(wanted)) {
    v.problem = wanted === null ? 'this node does not say where its peer\'s API is: open the console with ?peer=HOST:PORT'
      : `?peer=${wanted} is not HOST:PORT`;
    return;
  }
  if (peerApi === wanted) return;
  peerApi = wanted;
  v.api = wanted;
  peerFeed?.stop();
  peerFeed = new Feed(apiUrl(wanted), {
    status: (ps) => {
      if (ps.node !== peerName) {
        v.problem = `the API at ${wanted} answers as ${ps.node}, not ${peerName}: open the console with ?peer=HOST:PORT of ${peerName}'s API`;
        v.live = false;
        peerFeed.stop();
        scheduleRender();
        return;
      }
      onStatus(ps, false);
    },
    activity: (a) => { addActivity(peerName, a); scheduleRender(); },
    lost: () => { markLost(peerName); },
    refused: (message) => {
      // the token is this node's own (valid here only), or the peer has not learnt it yet
      v.problem = `${peerName}'s API refused the token: ${message}. To see both nodes, sign in with a cluster token (tandem token create NAME)`;
      v.live = false;
      peerFeed.stop();
      scheduleRender();
    },
  });
  peerFeed.open();
}

function markLost(name) {
  const v = viewOf(name);
  if (v.live) {
    v.live = false;
    scheduleRender();
  } else if (v.status === null) {
    scheduleRender();
  }
}

let selfLostAt = null;

function startFeeds() {
  selfFeed?.stop();
  peerFeed?.stop();
  peerFeed = null;
  peerApi = null;
  selfFeed = new Feed('', {
    status: (st) => onStatus(st, true),
    activity: (a) => { if (selfName !== null) { addActivity(selfName, a); scheduleRender(); } },
    lost: () => { selfLostAt ??= Date.now(); if (selfName !== null) markLost(selfName); else scheduleRender(); },
    refused: (message) => signOut(`This node refused the token: ${message}`),
  });
  selfFeed.open();
}

function stopFeeds() {
  selfFeed?.stop();
  peerFeed?.stop();
  selfFeed = null;
  peerFeed = null;
  peerApi = null;
}

// ------------------------------------------------------------------ signing in

let signedIn = false;

function showSignedIn(yes) {
  signedIn = yes;
  document.getElementById('sign-in').hidden = yes;
  document.getElementById('signed-in').hidden = !yes;
  document.getElementById('sections-nav').hidden = !yes;
  document.getElementById('sign-out').hidden = !yes;
}

function signIn() {
  showSignedIn(true);
  startFeeds();
}

/** Back to the sign-in form, saying why; the token is forgotten. */
function signOut(why) {
  setToken(null);
  stopFeeds();
  showSignedIn(false);
  scheduleRender();
  document.getElementById('sign-in-why').textContent = why;
  const input = document.getElementById('sign-in-token');
  input.value = '';
  input.focus();
}

document.getElementById('sign-in-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const t = document.getElementById('sign-in-token').value.trim();
  if (t === '') return;
  setToken(t);
  document.getElementById('sign-in-token').value = '';
  signIn();
});

document.getElementById('sign-out').addEventListener('click', () => signOut('Signed out. The token is forgotten by this tab.'));

window.addEventListener('hashchange', () => {
  if (takeTokenFromFragment()) signIn();
});

// ------------------------------------------------------------------ activity log

const activity = new Map();
let activityDirty = true;
let activitySeq = 0;

/** newest first; entries of the same millisecond in the order they arrived, newest first too */
function newestFirst(x, y) {
  return String(y.at).localeCompare(String(x.at)) || y.seq - x.seq;
}

function addActivity(node, a) {
  const key = `${node}\u0000${a.at}\u0000${a.event}\u0000${a.message}`;
  if (activity.has(key)) return;
  activity.set(key, { node, ...a, seq: activitySeq++ });
  activityDirty = true;
  if (activity.size > ACTIVITY_KEPT) {
    const oldest = [...activity.entries()].sort((x, y) => newestFirst(y[1], x[1]))[0];
    activity.delete(oldest[0]);
  }
}

const LEVEL_RANK = { debug: 0, info: 1, warn: 2, error: 3 };

function renderActivity() {
  const text = document.getElementById('activity-text').value.trim().toLowerCase();
  const level = document.getElementById('activity-level').value;
  const node = document.getElementById('activity-node').value;
  const min = level === '' ? 0 : LEVEL_RANK[level];
  const all = [...activity.values()].sort(newestFirst);
  const shown = all.filter((a) => (LEVEL_RANK[a.level] ?? 1) >= min
    && (node === '' || a.node === node)
    && (text === '' || `${a.node} ${a.level} ${a.event} ${a.message} ${a.pool ?? ''}`.toLowerCase().includes(text)));
  const list = shown.slice(0, ACTIVITY_SHOWN).map((a) => `<li class="entry">
      <time datetime="${esc(a.at)}">${esc(clock(a.at))}</time>
      <span class="node-name">${esc(a.node)}</span>
      <span class="lvl lvl-${esc(a.level)}">${esc(a.level)}</span>
      <span class="event">${esc(a.event)}</span>
      <span class="message">${esc(a.message)}</span>
    </li>`).join('');
  patch('activity-list', list || '<li class="muted">No entries match.</li>');
  const count = shown.length === all.length ? `${all.length} entries` : `${shown.length} of ${all.length} entries match`;
  const more = shown.length > ACTIVITY_SHOWN ? ` (the newest ${ACTIVITY_SHOWN} shown)` : '';
  const countEl = document.getElementById('activity-count');
  if (countEl.textContent !== count + more) countEl.textContent = count + more;
  const sel = document.getElementById('activity-node');
  const names = [...views.keys()].sort();
  const have = [...sel.options].map((o) => o.value).filter((x) => x !== '');
  if (names.join() !== have.join()) {
    const cur = sel.value;
    sel.innerHTML = `<option value="">both nodes</option>${names.map((n) => `<option value="${esc(n)}">${esc(n)}</option>`).join('')}`;
    sel.value = cur;
  }
  activityDirty = false;
}

// ------------------------------------------------------------------ rendering

const rendered = new Map();

/** Replaces a region's markup only when it changed, and keeps the keyboard focus where it was. */
function patch(id, html) {
  if (rendered.get(id) === html) return;
  rendered.set(id, html);
  const el = document.getElementById(id);
  const active = document.activeElement;
  const key = active !== null && el.contains(active) ? active.getAttribute('data-focus') : null;
  el.innerHTML = html;
  if (key !== null) el.querySelector(`[data-focus="${CSS.escape(key)}"]`)?.focus();
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function nodeNames() {
  const names = new Set(views.keys());
  const self = selfName === null ? null : views.get(selfName)?.status;
  if (self) names.add(self.peer.name);
  return [...names].sort();
}

function selfView() {
  return selfName === null ? undefined : views.get(selfName);
}

function otherOf(name) {
  return nodeNames().find((n) => n !== name);
}

function staleText(v) {
  return v.lastAt === null ? 'never reached' : `stale: as of ${clock(v.lastAt)}`;
}

function render() {
  renderHeader();
  renderNodes();
  renderPools();
  renderVolumes();
  if (activityDirty) renderActivity();
  announceChanges();
  firstRender = false;
}

function renderHeader() {
  const sv = selfView();
  const conn = document.getElementById('connection');
  let text;
  let cls;
  if (!signedIn) {
    text = 'Not signed in';
    cls = '';
  } else if (sv === undefined || sv.status === null) {
    text = selfLostAt === null ? 'Connecting to this node…' : 'Cannot reach the node that served this page: retrying';
    cls = selfLostAt === null ? '' : 'stale';
  } else if (sv.live) {
    text = `Live: ${sv.status.node} at ${location.host}`;
    cls = 'live';
  } else {
    text = `${sv.status.node} is unreachable: showing what it said at ${clock(sv.lastAt)} (stale), retrying`;
    cls = 'stale';
  }
  if (conn.textContent !== text) conn.textContent = text;
  conn.className = `connection ${cls}`;
  if (sv?.status) {
    const cn = document.getElementById('cluster-name');
    const want = `cluster ${sv.status.cluster}`;
    if (cn.textContent !== want) cn.textContent = want;
    const by = document.getElementById('served-by');
    const served = `Console of ${sv.status.node}; commands go to ${sv.status.node}`;
    if (by.textContent !== served) by.textContent = served;
    document.title = `${sv.live ? '' : '(stale) '}Tandem: ${sv.status.node}`;
  }
}

function linkBadge(up) {
  if (up === true) return '<span class="badge h-up"><span aria-hidden="true">●</span> up</span>';
  if (up === false) return '<span class="badge h-down"><span aria-hidden="true">○</span> down</span>';
  return '<span class="badge s-unknown">unknown</span>';
}

function nodeHealth(name) {
  const v = views.get(name);
  const st = v?.status;
  const other = views.get(otherOf(name));
  const otherSt = other?.live ? other.status : null;
  if (!v || !st || !v.live) {
    if (otherSt && otherSt.clusterState && !otherSt.clusterState.peer.up) {
      return { cls: 'down', text: `Down: ${otherSt.node} hears no heartbeats from it` };
    }
    if (v?.problem) return { cls: 'down', text: 'API not reachable' };
    return { cls: 'down', text: st ? 'Unreachable from this browser' : 'Not reached yet' };
  }
  const issues = [];
  const cs = st.clusterState;
  if (cs && !cs.peer.up) issues.push(`hears no heartbeats from ${st.peer.name}`);
  else if (cs && cs.peer.links.up < cs.peer.links.total) issues.push(`${cs.peer.links.total - cs.peer.links.up} of ${cs.peer.links.total} heartbeat links down`);
  if (!st.peer.connected) issues.push('sync link down');
  for (const vol of st.volumes) if (vol.state !== 'PRIM' && vol.state !== 'SECOND') issues.push(`${vol.name} ${vol.state}`);
  // a node that left (or is leaving, or was removed) says so first: it is why it serves nothing
  const m = cs?.membership;
  if (m && m.self !== 'member') issues.unshift(`${m.self}: it owns and takes no pool`);
  if (m && m.peer !== 'member') issues.push(`holds ${st.peer.name} ${m.peer}`);
  if (cs?.maintenance) issues.push('maintenance on');
  else if (otherSt?.clusterState?.maintenance) issues.push(`maintenance on (${otherSt.node}'s switch)`);
  for (const p of cs?.pools ?? []) if (p.phase === 'INACTIVE' || p.phase === 'SUSPENDED') issues.push(`${p.name} ${p.phase}`);
  for (const p of cs?.pools ?? []) if (p.control === 'unmanaged') issues.push(`${p.name} unmanaged`);
  if (st.config?.diverged) issues.push('cluster configuration diverged: tandem config push on the node that should win');
  return issues.length === 0 ? { cls: 'ok', text: 'Healthy' } : { cls: 'degraded', text: `Degraded: ${issues.join(', ')}` };
}

function renderNodes() {
  const names = nodeNames();
  const sv = selfView();
  const cards = names.map((name) => {
    const v = views.get(name) ?? { status: null, live: false, lastAt: null, api: null, self: false, problem: null };
    const st = v.status;
    const h = nodeHealth(name);
    const isSelf = name === selfName;
    const other = views.get(otherOf(name));
    const otherSt = other?.status;
    const rows = [];
    const api = v.api ?? (isSelf ? location.host : peerApi);
    let apiText = api ? esc(api) : 'unknown';
    if (v.live) apiText += ' · live';
    else if (st) apiText += ` · <span class="tag stale">${esc(staleText(v))}</span>, retrying`;
    else apiText += ' · not reached yet';
    if (!isSelf && api && v.live) apiText += ` · <a href="${esc(apiUrl(api))}/">open ${esc(name)}'s console</a>`;
    rows.push(['API', apiText]);
    if (v.problem) rows.push(['Problem', esc(v.problem)]);
    const cs = st?.clusterState;
    if (st) {
      if (cs) {
        rows.push(['Peer', `${esc(st.peer.name)} ${cs.peer.up ? 'heard' : '<strong>not heard</strong>'} · ${cs.peer.links.up} of ${cs.peer.links.total} heartbeat links up`]);
        const links = (cs.heartbeatLinks ?? []).map((l, i) => `<li>link ${i + 1}: ${esc(l.listen)} → ${esc(l.peer)} ${linkBadge(l.up)}</li>`).join('');
        if (links) rows.push(['Heartbeat links', `<ul class="links" aria-label="Heartbeat links of ${esc(name)}">${links}</ul>`]);
      }
      rows.push(['Sync link', st.peer.connected ? `connected to ${esc(st.peer.name)}` : '<strong>down</strong>']);
      if (cs) rows.push(['Fencing', `${esc(cs.policy)} · maintenance ${cs.maintenance ? '<strong>on</strong>' : 'off'}`]);
      const m = cs?.membership;
      if (m) rows.push(['Membership', `${m.self === 'member' ? 'member' : `<strong>${esc(m.self)}</strong>`} · holds ${esc(st.peer.name)} ${m.peer === 'member' ? 'as a member' : `<strong>${esc(m.peer)}</strong>`}`]);
    }
    if (otherSt && otherSt.node !== name) {
      const seen = otherSt.clusterState ? (otherSt.clusterState.peer.up ? 'heartbeats heard' : '<strong>no heartbeats</strong>') : '';
      const link = otherSt.peer.connected ? 'sync link connected' : 'sync link down';
      rows.push([`Seen by ${esc(otherSt.node)}`, `${seen}${seen ? ', ' : ''}${link}${other.live ? '' : ' (stale)'}`]);
    }
    const dl = rows.map(([k, val]) => `<dt>${k}</dt><dd>${val}</dd>`).join('');
    return `<article class="node health-${h.cls}${v.live ? '' : ' stale'}" aria-label="Node ${esc(name)}">
      <header>
        <h3>${esc(name)} ${isSelf ? '<span class="tag">this console\'s node</span>' : '<span class="tag">peer</span>'}</h3>
        <span class="health health-text-${h.cls}">${esc(h.text)}</span>
      </header>
      <dl>${dl}</dl>
    </article>`;
  });
  patch('nodes-body', cards.join('') || '<p class="muted">Waiting for the first status…</p>');

  const cs = sv?.status?.clusterState;
  let tools = '';
  if (cs) {
    // each node has its own switch and either one counts on both
    const on = cs.maintenance;
    const switchedOn = names.filter((n) => views.get(n)?.status?.clusterState?.maintenance);
    const effective = switchedOn.length > 0;
    const which = effective ? ` (${switchedOn.map((n) => `${esc(n)}'s switch`).join(' and ')})` : '';
    tools = `<span>Maintenance: <strong>${effective ? 'on' : 'off'}</strong>${which}</span>
      <button type="button" data-focus="maintenance" data-action="maintenance" data-on="${on ? 'false' : 'true'}"${sv.live ? '' : ' disabled'}>Turn maintenance ${on ? 'off' : 'on'} at ${esc(sv.status.node)}</button>`;
    // docs/cluster.md, "Taking a node offline": this node leaves and comes back; the peer is removed and added here
    const m = cs.membership;
    const dis = sv.live ? '' : ' disabled';
    const self = esc(sv.status.node);
    const peer = esc(sv.status.peer.name);
    if (m?.self === 'member') tools += `<button type="button" data-focus="node-offline" data-action="node-offline"${dis}>Take ${self} offline…</button>`;
    else if (m) tools += `<button type="button" data-focus="node-online" data-action="node-online"${dis}>Bring ${self} online…</button>`;
    if (m?.peer === 'offline') tools += `<button type="button" class="danger" data-focus="node-remove" data-action="node-remove"${dis}>Remove ${peer}…</button>`;
    else if (m?.peer === 'removed') tools += `<button type="button" data-focus="node-add" data-action="node-add"${dis}>Add ${peer} back…</button>`;
  }
  patch('cluster-toolbar', tools);
}

function phaseBadge(phase) {
  return `<span class="badge p-${esc(phase)}">${esc(phase)}</span>`;
}

function renderPools() {
  const sv = selfView();
  const st = sv?.status;
  if (!st?.clusterState) { patch('pools-body', '<p class="muted">No cluster state yet.</p>'); return; }
  const peerV = views.get(st.peer.name);
  const peerSt = peerV?.status;
  const rows = st.clusterState.pools.map((p) => {
    const mine = p.owner === st.node;
    const peerPool = peerSt?.clusterState?.pools.find((x) => x.name === p.name);
    const phases = [`<li>${esc(st.node)}: ${phaseBadge(p.phase)}${p.reason ? ` <span class="detail">${esc(p.reason)}</span>` : ''}</li>`];
    if (peerPool) {
      phases.push(`<li>${esc(peerSt.node)}: ${phaseBadge(peerPool.phase)}${peerV.live ? '' : ' <span class="tag stale">stale</span>'}${peerPool.reason ? ` <span class="detail">${esc(peerPool.reason)}</span>` : ''}</li>`);
    }
    let owner = esc(p.owner);
    if (peerPool && peerPool.owner !== p.owner) owner += ` <span class="detail">${esc(peerSt.node)} says ${esc(peerPool.owner)} (term ${peerPool.term})</span>`;
    const ips = (p.floatingIps ?? []).map((x) => `<li>${esc(x)}</li>`).join('') || '<li class="muted">none</li>';
    const ex = (p.exports ?? []).map((x) => `<li>${esc(x)}</li>`).join('') || '<li class="muted">none</li>';
    const services = servicesCell(mine ? p : (peerPool ?? p), mine ? st.node : (peerSt?.node ?? st.node));
    let actions;
    if (mine && p.phase === 'INACTIVE') {
      // its activation failed here: start it again (here or on the peer), or take it out of the cluster
      const dis = sv.live ? '' : ' disabled';
      actions = `<div class="actions">
        <button type="button" data-focus="reattach-${esc(p.name)}" data-action="reattach" data-pool="${esc(p.name)}"${dis} aria-label="Reattach ${esc(p.name)}">Reattach…</button>
        <button type="button" class="danger" data-focus="remove-${esc(p.name)}" data-action="remove-pool" data-pool="${esc(p.name)}"${dis} aria-label="Remove ${esc(p.name)}">Remove…</button>
      </div>`;
    } else if (mine) {
      const dis = sv.live ? '' : ' disabled';
      actions = `<div class="actions">
        <button type="button" data-focus="swap-${esc(p.name)}" data-action="swap" data-pool="${esc(p.name)}"${dis} aria-label="Swap ${esc(p.name)}">Swap</button>
        <button type="button" data-focus="move-${esc(p.name)}" data-action="move" data-pool="${esc(p.name)}"${dis} aria-label="Move ${esc(p.name)}">Move…</button>
      </div>`;
    } else {
      const api = peerApi && peerV?.live ? apiUrl(peerApi) : null;
      actions = api ? `<a href="${esc(api)}/">Swap or move on ${esc(p.owner)}'s console</a>` : `<span class="muted">asked of the owner, ${esc(p.owner)}</span>`;
    }
    return `<tr aria-label="${esc(p.name)}">
      <th scope="row">${esc(p.name)}</th>
      <td>${owner}</td>
      <td><ul class="plain">${phases.join('')}</ul></td>
      <td><ul class="plain">${ips}</ul></td>
      <td><ul class="plain">${ex}</ul></td>
      <td>${services}</td>
      <td class="num">${p.term}</td>
      <td>${actions}</td>
    </tr>`;
  });
  patch('pools-body', `<div class="table-wrap"><table>
    <caption>Who serves each pool, as ${esc(st.node)} sees it${peerSt ? ` (and ${esc(peerSt.node)})` : ''}.</caption>
    <thead><tr><th scope="col">Pool</th><th scope="col">Owner</th><th scope="col">Phase</th><th scope="col">Floating IPs</th><th scope="col">Exports</th><th scope="col">Filesystem and applications</th><th scope="col">Term</th><th scope="col">Actions</th></tr></thead>
    <tbody>${rows.join('') || '<tr><td colspan="8" class="muted">No pools.</td></tr>'}</tbody>
  </table></div>`);
}

/** the pool's filesystem and applications as `node` (its owner, when known) reports them */
function servicesCell(p, node) {
  const items = [];
  if (p.filesystem) {
    items.push(`<li>${esc(p.filesystem.mountpoint)} (${esc(p.filesystem.volume)}): ${p.filesystem.mounted ? 'mounted' : '<span class="muted">not mounted</span>'}</li>`);
  }
  for (const a of p.applications ?? []) {
    const glyph = { running: '✓', starting: '…', stopping: '…', stopped: '○', failed: '✕' }[a.state] ?? '?';
    const restarts = a.restarts > 0 ? ` · ${a.restarts} restart${a.restarts === 1 ? '' : 's'}` : '';
    const why = a.error ? ` <span class="detail">${esc(a.error)}</span>` : '';
    const check = a.lastCheck ? ` <span class="detail">last check ${esc(a.lastCheck.probe)}: ${a.lastCheck.ok ? 'ok' : esc(a.lastCheck.message)}</span>` : '';
    items.push(`<li aria-label="application ${esc(a.name)} on ${esc(node)}: ${esc(a.state)}">${glyph} ${esc(a.name)} (${esc(a.module)}): <strong>${esc(a.state)}</strong>${restarts}${why}${check}</li>`);
  }
  return items.length === 0 ? '<span class="muted">none</span>' : `<ul class="plain">${items.join('')}</ul>`;
}

const STATE_GLYPH = { PRIM: '✓', SECOND: '⇄', ALONE: '⚠', SYNCING: '⟳', 'SPLIT-BRAIN': '✕', WAIT: '…' };

function resyncLine(r) {
  return `${percent(r)}% · ${size(r.doneBytes)} of ${size(r.totalBytes)} · ${size(r.rateBytesPerSecond)}/s · ETA ${duration(r.etaSeconds)}`;
}

function progressBar(r, label) {
  return `<span class="progress"><progress max="100" value="${percent(r)}" aria-label="${esc(label)}">${percent(r)}%</progress></span>`;
}

function stateCell(vol, node, peerName) {
  const s = vol.state;
  let badge = `<span class="badge s-${esc(s)}"><span aria-hidden="true">${STATE_GLYPH[s] ?? ''}</span> ${esc(s)}</span>`;
  let detail = '';
  const r = vol.resync;
  if (s === 'SYNCING') {
    if (r) {
      badge = `<span class="badge s-SYNCING"><span aria-hidden="true">⟳</span> SYNCING ${percent(r)}%</span>`;
      detail = `<span class="detail">from ${esc(peerName)}: ${esc(resyncLine(r))}</span>${progressBar(r, `Resync of ${vol.name} on ${node}`)}`;
    } else {
      detail = `<span class="detail">waiting for ${esc(peerName)} to resync this copy</span>`;
    }
  } else if (s === 'ALONE') {
    detail = r && r.direction === 'to-peer'
      ? `<span class="detail">resyncing ${esc(peerName)}: ${esc(resyncLine(r))}</span>${progressBar(r, `Resync of ${vol.name} from ${node} to ${peerName}`)}`
      : `<span class="detail">writes go on without ${esc(peerName)}: redundancy lost</span>`;
  } else if (s === 'PRIM') {
    detail = `<span class="detail">mirrored to ${esc(peerName)}</span>`;
  } else if (s === 'SECOND') {
    detail = '<span class="detail">up to date, takes every write</span>';
  } else if (s === 'WAIT') {
    detail = `<span class="detail">secondary without ${esc(peerName)}</span>`;
  } else if (s === 'SPLIT-BRAIN' && vol.splitBrain) {
    detail = `<span class="detail">${esc(vol.splitBrain.reason)} (since ${esc(clock(vol.splitBrain.since))})</span>`;
  }
  if (vol.suspended) detail += `<span class="detail"><strong>writes suspended:</strong> ${esc(vol.suspended)}</span>`;
  if (vol.error) detail += `<span class="detail"><strong>error:</strong> ${esc(vol.error)}</span>`;
  return badge + detail;
}

function renderVolumes() {
  const names = nodeNames();
  const volNames = new Set();
  for (const n of names) for (const v of views.get(n)?.status?.volumes ?? []) volNames.add(v.name);
  const sv = selfView();
  const rows = [];
  for (const volName of [...volNames].sort()) {
    names.forEach((node, i) => {
      const v = views.get(node);
      const vol = v?.status?.volumes.find((x) => x.name === volName);
      const other = otherOf(node) ?? '?';
      const isSelf = node === selfName;
      const stale = v !== undefined && vol !== undefined && !v.live;
      const label = `${volName} on ${node}${stale ? `, ${staleText(v)}` : vol === undefined ? ', unknown' : ''}`;
      const nodeCell = `${esc(node)}${isSelf ? ' <span class="tag">this console</span>' : ''}`;
      const cls = `${i === 0 ? 'group-start' : ''}${stale ? ' stale' : ''}`;
      if (vol === undefined) {
        // what the other node knows about this copy, while this one cannot be asked
        const o = views.get(other)?.status?.volumes.find((x) => x.name === volName);
        let seen = '';
        if (o) {
          seen = o.resync && o.resync.direction === 'to-peer' ? `${other} is resyncing it: ${resyncLine(o.resync)}`
            : `${other} sees its disk as ${o.peerDiskState ?? 'unknown'}, sync link ${o.connection}`;
        }
        rows.push(`<tr class="${cls}" aria-label="${esc(label)}">
          <th scope="row">${esc(volName)}</th><td>${nodeCell}</td><td>—</td>
          <td><span class="badge s-unknown">unknown</span><span class="detail">${esc(node)} not reached${seen ? `; ${esc(seen)}` : ''}</span></td>
          <td>—</td><td class="num">—</td><td>—</td></tr>`);
        return;
      }
      let actions = '';
      if (isSelf) {
        const dis = v.live ? '' : ' disabled';
        actions = '<div class="actions">';
        // verify compares from the primary's side
        if (vol.role === 'PRIMARY') actions += `<button type="button" data-focus="verify-${esc(volName)}" data-action="verify" data-volume="${esc(volName)}"${dis} aria-label="Verify ${esc(volName)}">Verify</button>`;
        if (vol.state === 'SPLIT-BRAIN' || vol.splitBrain) {
          actions += `<button type="button" class="danger" data-focus="resolve-${esc(volName)}" data-action="resolve" data-volume="${esc(volName)}"${dis} aria-label="Resolve the split brain of ${esc(volName)} by discarding ${esc(node)}'s changes">Resolve…</button>`;
        }
        actions += '</div>';
      } else if (vol.role === 'PRIMARY' && v.live && peerApi) {
        actions = `<a href="${esc(apiUrl(peerApi))}/">Verify on ${esc(node)}'s console</a>`;
      }
      const staleTag = stale ? ` <span class="tag stale">${esc(staleText(v))}</span>` : '';
      rows.push(`<tr class="${cls}" aria-label="${esc(label)}">
        <th scope="row">${esc(volName)}</th>
        <td>${nodeCell}</td>
        <td>${esc(vol.role)}</td>
        <td>${stateCell(vol, node, other)}${staleTag}</td>
        <td>${esc(vol.diskState)}<span class="detail">peer's: ${esc(vol.peerDiskState ?? 'unknown')} · ${esc(vol.connection)}</span></td>
        <td class="num">${esc(size(vol.outOfSyncBytes))}</td>
        <td>${actions}</td>
      </tr>`);
    });
  }
  if (!sv?.status) { patch('volumes-body', '<p class="muted">Waiting for the first status…</p>'); return; }
  patch('volumes-body', `<div class="table-wrap"><table>
    <caption>Each volume's copy on each node, as that node reports it. Colours repeat the state written in each row.</caption>
    <thead><tr><th scope="col">Volume</th><th scope="col">Node</th><th scope="col">Role</th><th scope="col">State</th><th scope="col">Disk</th><th scope="col">Out of sync</th><th scope="col">Actions</th></tr></thead>
    <tbody>${rows.join('') || '<tr><td colspan="7" class="muted">No volumes.</td></tr>'}</tbody>
  </table></div>`);
}

/** Tells screen readers what changed, briefly: the tables themselves stay quiet. */
function announceChanges() {
  const now = new Map();
  for (const [name, v] of views) {
    now.set(`node:${name}`, v.live ? 'reachable' : 'unreachable');
    for (const vol of v.status?.volumes ?? []) now.set(`${vol.name} on ${name}`, vol.state);
    for (const p of v.status?.clusterState?.pools ?? []) if (v.self) now.set(`${p.name} owner`, p.owner);
  }
  const said = [];
  for (const [k, val] of now) {
    const before = previous.get(k);
    if (before === undefined || before === val || firstRender) continue;
    if (k.startsWith('node:')) said.push(`${k.slice(5)} is ${val}`);
    else if (k.endsWith(' owner')) said.push(`${k.slice(0, -6)} is now owned by ${val}`);
    else said.push(`${k}: ${val}`);
  }
  previous.clear();
  for (const [k, val] of now) previous.set(k, val);
  if (said.length > 0) document.getElementById('announcer').textContent = said.join('. ');
}

// ------------------------------------------------------------------ commands

const dialog = document.getElementById('confirm');

/** Asks before a command; resolves with the dialog's inputs, or null when cancelled. */
function confirmAction({ title, text, extra = '', ok, danger = false, check }) {
  return new Promise((resolve) => {
    document.getElementById('confirm-title').textContent = title;
    document.getElementById('confirm-text').textContent = text;
    document.getElementById('confirm-extra').innerHTML = extra;
    const okButton = document.getElementById('confirm-ok');
    const cancel = document.getElementById('confirm-cancel');
    okButton.textContent = ok;
    okButton.className = danger ? 'danger' : 'primary';
    const values = () => Object.fromEntries([...dialog.querySelectorAll('[name]')].map((el) => [el.name, el.type === 'checkbox' ? el.checked : el.value]));
    const sync = () => { okButton.disabled = check ? !check(values()) : false; };
    dialog.oninput = sync;
    sync();
    const done = (result) => {
      okButton.onclick = null;
      cancel.onclick = null;
      dialog.onclose = null;
      dialog.oninput = null;
      if (dialog.open) dialog.close();
      resolve(result);
    };
    okButton.onclick = () => done(values());
    cancel.onclick = () => done(null);
    dialog.onclose = () => done(null);
    dialog.showModal();
    (dialog.querySelector('[name]') ?? cancel).focus();
  });
}

function showResult(kind, text) {
  const el = document.getElementById('command-result');
  el.hidden = false;
  el.className = `command-result ${kind}`;
  el.textContent = text;
}

async function post(what, path, body) {
  showResult('pending', `${what}: sent to ${selfName}…`);
  try {
    const res = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json', ...authHeaders() }, body: JSON.stringify(body) });
    const answer = await res.json().catch(() => null);
    if (res.status === 401) signOut(`This node refused the token: ${answer?.error?.message ?? 'HTTP 401'}`);
    if (!res.ok) throw new Error(answer?.error?.message ?? `HTTP ${res.status}`);
    showResult('ok', `${what}: ${answer?.message ?? 'done'}`);
    return answer;
  } catch (e) {
    showResult('failed', `${what} failed: ${e.message}`);
    return null;
  }
}

async function onAction(button) {
  const st = selfView()?.status;
  if (!st) return;
  const peer = st.peer.name;
  const pool = button.dataset.pool;
  const volume = button.dataset.volume;
  const refocus = () => document.querySelector(`[data-focus="${CSS.escape(button.dataset.focus)}"]`)?.focus();
  switch (button.dataset.action) {
    case 'swap': {
      const ok = await confirmAction({
        title: `Swap ${pool}?`,
        text: `${st.node} releases ${pool} (its exports, floating IPs, then its volumes) and ${peer} takes it over. NBD clients reconnect to the same addresses. Refused unless ${peer} is up and every volume of ${pool} is in sync.`,
        ok: 'Swap',
      });
      refocus();
      if (ok) await post(`Swap ${pool}`, `/api/v1/pools/${encodeURIComponent(pool)}/swap`, {});
      return;
    }
    case 'move': {
      const names = nodeNames();
      const options = names.map((n) => `<option value="${esc(n)}"${n === peer ? ' selected' : ''}>${esc(n)}${n === st.node ? ' (owns it now)' : ''}</option>`).join('');
      const ok = await confirmAction({
        title: `Move ${pool}?`,
        text: `${st.node} hands ${pool} over to the node you choose, as a swap does. Nothing stays pinned: failover and failback work as before.`,
        extra: `<label class="field">Move to<select name="node">${options}</select></label>`,
        ok: 'Move',
      });
      refocus();
      if (ok) await post(`Move ${pool} to ${ok.node}`, `/api/v1/pools/${encodeURIComponent(pool)}/move`, { node: ok.node });
      return;
    }
    case 'maintenance': {
      const on = button.dataset.on === 'true';
      const ok = await confirmAction({
        title: `Turn maintenance ${on ? 'on' : 'off'}?`,
        text: on ? `Sets ${st.node}'s maintenance switch. While either node's switch is on, nothing fails over: no takeover, fence or failback, on either node. A node cut off from everything keeps writing: that is the operator's responsibility.`
          : `Clears ${st.node}'s maintenance switch. Failover and failback work again as the fencing policy allows once ${peer}'s switch is off too.`,
        ok: `Turn maintenance ${on ? 'on' : 'off'}`,
        danger: on,
      });
      refocus();
      if (ok) await post(`Maintenance ${on ? 'on' : 'off'}`, '/api/v1/maintenance', { on });
      return;
    }
    case 'reattach': {
      const names = nodeNames();
      const options = names.map((n) => `<option value="${esc(n)}"${n === st.node ? ' selected' : ''}>${esc(n)}${n === st.node ? ' (here, where it failed)' : ''}</option>`).join('');
      const ok = await confirmAction({
        title: `Reattach ${pool}?`,
        text: `${pool} is INACTIVE on ${st.node}: its activation failed. Clear the cause first (the reason is shown beside the phase), then start it again here, or hand it to ${peer} (only with its volumes in sync).`,
        extra: `<label class="field">Start it on<select name="node">${options}</select></label>`,
        ok: 'Reattach',
      });
      refocus();
      if (ok) await post(`Reattach ${pool} on ${ok.node}`, `/api/v1/pools/${encodeURIComponent(pool)}/reattach`, { node: ok.node });
      return;
    }
    case 'remove-pool': {
      const ok = await confirmAction({
        title: `Remove ${pool}?`,
        text: `${pool} leaves the cluster on both nodes. Its volumes' files are moved aside on each node (DATA_DIR/removed), not deleted.`,
        extra: `<p class="warning">Type the pool's name to confirm.</p><label class="field">Pool name<input name="confirm" autocomplete="off" spellcheck="false"></label>`,
        ok: 'Remove',
        danger: true,
        check: (v) => v.confirm === pool,
      });
      refocus();
      if (ok) await post(`Remove ${pool}`, `/api/v1/pools/${encodeURIComponent(pool)}/remove`, {});
      return;
    }
    case 'node-offline': {
      const ok = await confirmAction({
        title: `Take ${st.node} offline?`,
        text: `${st.node} hands every pool it owns to ${peer} (each as a swap: only with its volumes in sync), then leaves the cluster: it owns and takes nothing, even after a restart, until it is brought online. ${peer} goes on without it and does not fence it.`,
        ok: 'Take offline',
        danger: true,
      });
      refocus();
      if (ok) await post(`${st.node} offline`, '/api/v1/node/offline', {});
      return;
    }
    case 'node-online': {
      const ok = await confirmAction({
        title: `Bring ${st.node} online?`,
        text: `${st.node} becomes a member again once ${peer} takes note; refused while ${peer} is not reachable. Pools stay where they are: swap or move them back.`,
        ok: 'Bring online',
      });
      refocus();
      if (ok) await post(`${st.node} online`, '/api/v1/node/online', {});
      return;
    }
    case 'node-remove': {
      const ok = await confirmAction({
        title: `Remove ${peer} from the cluster?`,
        text: `${peer} left the cluster. Removing it is permanent: if it starts again it is told so and stays offline until it is added back here.`,
        extra: `<p class="warning">Type the node's name to confirm.</p><label class="field">Node name<input name="confirm" autocomplete="off" spellcheck="false"></label>`,
        ok: 'Remove',
        danger: true,
        check: (v) => v.confirm === peer,
      });
      refocus();
      if (ok) await post(`Remove ${peer}`, `/api/v1/nodes/${encodeURIComponent(peer)}/remove`, {});
      return;
    }
    case 'node-add': {
      const ok = await confirmAction({
        title: `Add ${peer} back?`,
        text: `${peer} may come back: it stays offline until tandem node online runs on it.`,
        ok: 'Add back',
      });
      refocus();
      if (ok) await post(`Add ${peer}`, `/api/v1/nodes/${encodeURIComponent(peer)}/add`, {});
      return;
    }
    case 'verify': {
      const vol = st.volumes.find((v) => v.name === volume);
      const ok = await confirmAction({
        title: `Verify ${volume}?`,
        text: `Compares ${st.node}'s and ${peer}'s copies of ${volume} block by block: it reads all ${size(vol?.size)} on both nodes, beside the clients' I/O.`,
        extra: '<label class="field-inline"><input type="checkbox" name="resync"> Resend the blocks that differ</label>',
        ok: 'Verify',
      });
      refocus();
      if (!ok) return;
      showResult('pending', `Verify ${volume}: comparing…`);
      const res = await fetch(`/api/v1/volumes/${encodeURIComponent(volume)}/verify`, {
        method: 'POST', headers: { 'content-type': 'application/json', ...authHeaders() }, body: JSON.stringify({ resync: ok.resync === true }),
      }).catch((e) => ({ ok: false, status: 0, json: async () => ({ error: { message: e.message } }) }));
      const r = await res.json().catch(() => null);
      if (res.status === 401) signOut(`This node refused the token: ${r?.error?.message ?? 'HTTP 401'}`);
      if (!res.ok) { showResult('failed', `Verify ${volume} failed: ${r?.error?.message ?? `HTTP ${res.status}`}`); return; }
      showResult(r.differingBytes === 0 ? 'ok' : 'failed',
        `Verify ${volume}: checked ${size(r.checkedBytes)}, ${size(r.differingBytes)} differ${r.resentBytes ? `, ${size(r.resentBytes)} resent` : ''}`);
      return;
    }
    case 'resolve': {
      const ok = await confirmAction({
        title: `Resolve the split brain of ${volume}?`,
        text: `${st.node}'s changes to ${volume} since the two copies parted are thrown away, and ${st.node} takes ${peer}'s copy by a resync. This cannot be undone. To discard ${peer}'s changes instead, use ${peer}'s console.`,
        extra: `<p class="warning">Type the volume's name to confirm.</p><label class="field">Volume name<input name="confirm" autocomplete="off" spellcheck="false"></label>`,
        ok: `Discard ${st.node}'s changes`,
        danger: true,
        check: (v) => v.confirm === volume,
      });
      refocus();
      if (ok) await post(`Resolve ${volume}`, `/api/v1/volumes/${encodeURIComponent(volume)}/resolve`, { discard: st.node });
      return;
    }
  }
}

document.addEventListener('click', (e) => {
  const button = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
  if (button === null || button.disabled) return;
  void onAction(button);
});

for (const id of ['activity-text', 'activity-level', 'activity-node']) {
  document.getElementById(id).addEventListener('input', () => { activityDirty = true; renderActivity(); });
}
document.getElementById('activity-filter').addEventListener('submit', (e) => e.preventDefault());

takeTokenFromFragment();
if (token() === null) signOut('This node\'s API needs a token.');
else signIn();
