// hns web view: reads the API read-only under /api/, draws the host, lists every object.
// Live: follows /api/events (newline-delimited JSON) and refreshes on every event (debounced);
// while the stream is absent it polls every second and reconnects with back-off.
// Traffic rates: /api/metrics every 2 s, bytes per second per endpoint.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const REFRESH_DEBOUNCE_MS = 100;
const POLL_MS = 1000;
const METRICS_MS = 2000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const ENDPOINT_FLAG_REMOTE = 1;
// Colour of each network's switch and wires (all dark enough for text on white).
const PALETTE = ['#0b57d0', '#146c2e', '#a4161a', '#7b4bb3', '#8a4b00', '#00677f', '#b3186d', '#4a5260'];

const state = {
  networks: [], endpoints: [], namespaces: [], portmappings: [], loadbalancers: [], info: null,
  rates: new Map(),      // endpoint ID -> {rx, tx} bytes/s
  lastCounters: null,    // {t, byId: Map(endpoint ID -> {rx, tx})}
  mode: 'connecting',
  refreshes: 0,
  events: 0,
};
window.hnsView = state; // for tests and the curious: the data the page shows

// ---------- small helpers ----------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = String(v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(e, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function shortId(id) { return id ? String(id).slice(0, 8) : ''; }

function fmtRate(bps) {
  if (bps === undefined || bps === null || !isFinite(bps)) return '–';
  const units = ['B/s', 'kB/s', 'MB/s', 'GB/s'];
  let v = bps, i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
}

function truncate(s, n) { s = String(s ?? ''); return s.length > n ? s.slice(0, n - 1) + '…' : s; }

function subnetsOf(n) {
  return (n.Ipams || []).flatMap((i) => i.Subnets || []);
}

function gatewaysOf(n) {
  return subnetsOf(n).flatMap((s) => (s.Routes || []).map((r) => r.NextHop)).filter(Boolean);
}

function uplinkOf(n) {
  if (n.InterfaceName) return n.InterfaceName;
  for (const p of n.Policies || []) {
    const s = p.Settings || {};
    if (p.Type === 'NetAdapterName' && s.NetworkAdapterName) return s.NetworkAdapterName;
  }
  return '';
}

function driverOf(n) { return String(n.Type ?? 'NAT'); }

// What connects a network to the outside: an adapter, NAT through the host's routes, VXLAN, none.
function uplinkLabel(n) {
  const name = uplinkOf(n);
  if (name) return name;
  const d = driverOf(n).toLowerCase();
  if (n.Internal) return 'none (internal)';
  if (d === 'nat' || d === 'ics') return 'host routes (NAT)';
  if (d === 'overlay') return 'VXLAN underlay';
  return 'host';
}

function isRemote(ep) { return ((ep.Flags || 0) & ENDPOINT_FLAG_REMOTE) !== 0; }

function addrsOf(ep) {
  return (ep.IpConfigurations || []).map((c) => c.IpAddress + (c.PrefixLength ? '/' + c.PrefixLength : ''));
}

const LB_FLAG_IPV6 = 2, LB_PM_ILB = 1, LB_PM_LOCAL_ROUTED = 2;

function protoName(p) { return p === 6 ? 'tcp' : p === 17 ? 'udp' : String(p); }

// `10.96.0.10:80/tcp → :8080` for each frontend address and port; `*` is every host address.
function lbFrontends(lb) {
  const vips = (lb.FrontendVIPs || []).length ? lb.FrontendVIPs : ['*'];
  return vips.flatMap((v) => (lb.PortMappings || []).map((m) =>
    (v.includes(':') ? '[' + v + ']' : v) + ':' + m.ExternalPort + '/' + protoName(m.Protocol) + ' → :' + m.InternalPort));
}

function lbFlags(lb) {
  const f = [];
  const pms = lb.PortMappings || [];
  if (pms.some((m) => (m.Flags || 0) & LB_PM_ILB)) f.push('internal');
  if (pms.some((m) => (m.Flags || 0) & LB_PM_LOCAL_ROUTED)) f.push('host-reachable');
  const dist = [...new Set(pms.map((m) => String(m.DistributionType ?? 'None')))].filter((d) => d !== 'None');
  if (dist.length) f.push('affinity ' + dist.join('/'));
  if ((lb.Flags || 0) & LB_FLAG_IPV6) f.push('IPv6');
  if (lb.SourceVIP) f.push('source VIP ' + lb.SourceVIP);
  return f;
}

function mappingLabel(m) {
  const host = (m.ExternalIp && m.ExternalIp !== '0.0.0.0' ? m.ExternalIp : '') + ':' + m.ExternalPort;
  return host + ' → ' + (m.EndpointName || shortId(m.EndpointId)) + ':' + m.InternalPort + '/' + String(m.Protocol || '').toLowerCase();
}

async function getJson(path) {
  const r = await fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
}

// ---------- data ----------

let refreshing = null;
let refreshAgain = false;

async function refresh() {
  // One at a time; a request during one runs once more after it.
  if (refreshing) { refreshAgain = true; return refreshing; }
  refreshing = (async () => {
    do {
      refreshAgain = false;
      try {
        const [networks, endpoints, namespaces, portmappings, loadbalancers, info] = await Promise.all([
          getJson('/api/networks'), getJson('/api/endpoints'), getJson('/api/namespaces'),
          getJson('/api/portmappings'), getJson('/api/loadbalancers'), getJson('/api/info'),
        ]);
        Object.assign(state, { networks, endpoints, namespaces, portmappings, loadbalancers, info, error: null });
        state.refreshes++;
        render();
        document.getElementById('updated-at').textContent = new Date().toLocaleTimeString();
      } catch (e) {
        state.error = String(e);
        setStatus(state.mode, 'cannot read the API: ' + e.message);
      }
    } while (refreshAgain);
    refreshing = null;
  })();
  return refreshing;
}

let debounceTimer = null;
function scheduleRefresh() {
  if (debounceTimer) return;
  debounceTimer = setTimeout(() => { debounceTimer = null; refresh(); }, REFRESH_DEBOUNCE_MS);
}

// ---------- live updates ----------

function setStatus(mode, text) {
  state.mode = mode;
  const s = document.getElementById('live-status');
  s.dataset.mode = mode;
  s.textContent = text;
}

let pollTimer = null;
function startPolling() {
  if (!pollTimer) pollTimer = setInterval(refresh, POLL_MS);
}
function stopPolling() {
  if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
}

async function followEvents() {
  let backoff = BACKOFF_MIN_MS;
  for (;;) {
    let why = 'the event stream ended';
    try {
      const r = await fetch('/api/events', { headers: { Accept: 'application/x-ndjson' }, cache: 'no-store' });
      if (!r.ok || !r.body) throw new Error(r.ok ? 'no stream body' : 'HTTP ' + r.status);
      setStatus('live', 'live');
      stopPolling();
      backoff = BACKOFF_MIN_MS;
      scheduleRefresh(); // whatever happened while not connected
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          try { onEvent(JSON.parse(line)); } catch (e) { /* a line that is not JSON: skip it */ }
        }
      }
    } catch (e) {
      why = 'event stream unavailable (' + e.message + ')';
    }
    setStatus('polling', 'polling every ' + POLL_MS / 1000 + ' s: ' + why + '; retrying in ' + (backoff / 1000).toFixed(1) + ' s');
    startPolling();
    await new Promise((res) => setTimeout(res, backoff));
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }
}

function onEvent(ev) {
  state.events++;
  state.lastEvent = ev;
  scheduleRefresh();
}

// ---------- traffic rates ----------

// Per-endpoint byte counters from the Prometheus text.
function parseCounters(text) {
  const byId = new Map();
  const re = /^hns_endpoint_(received|sent)_bytes_total\{([^}]*)\}\s+([0-9.eE+-]+)/;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (!m) continue;
    const id = /(?:^|,)endpoint="([^"]*)"/.exec(m[2]);
    if (!id) continue;
    const c = byId.get(id[1]) || { rx: 0, tx: 0 };
    c[m[1] === 'received' ? 'rx' : 'tx'] = Number(m[3]);
    byId.set(id[1], c);
  }
  return byId;
}

async function pollMetrics() {
  try {
    const r = await fetch('/api/metrics', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const now = { t: performance.now(), byId: parseCounters(await r.text()) };
    const prev = state.lastCounters;
    if (prev) {
      const dt = (now.t - prev.t) / 1000;
      const rates = new Map();
      for (const [id, c] of now.byId) {
        const p = prev.byId.get(id);
        // A counter that went down (a new veth) starts over: no rate this round.
        if (p && dt > 0 && c.rx >= p.rx && c.tx >= p.tx) rates.set(id, { rx: (c.rx - p.rx) / dt, tx: (c.tx - p.tx) / dt });
      }
      state.rates = rates;
      renderRates();
    }
    state.lastCounters = now;
  } catch (e) {
    state.metricsError = String(e);
  }
}

// ---------- rendering ----------

function render() {
  renderTopology();
  renderHealth();
  renderTables();
  applySearch();
}

function networkColors() {
  const colors = new Map();
  state.networks.forEach((n, i) => colors.set(n.ID, PALETTE[i % PALETTE.length]));
  return colors;
}

// Layout: the host box holds a row of uplinks, a row of switches (one per network) and, below,
// compartment boxes with their endpoints, wired to their switch; overlay peers in a dashed box
// per network. Port mappings label their endpoint.
function renderTopology() {
  const box = document.getElementById('topology');
  const colors = networkColors();
  const nets = state.networks;
  const netById = new Map(nets.map((n) => [n.ID, n]));
  const nsById = new Map(state.namespaces.map((n) => [n.ID, n]));
  const mappingsByEp = new Map();
  for (const m of state.portmappings) {
    if (!mappingsByEp.has(m.EndpointId)) mappingsByEp.set(m.EndpointId, []);
    mappingsByEp.get(m.EndpointId).push(m);
  }

  // Groups: one per compartment, "not attached" for local endpoints without one, one box of
  // overlay peers per network.
  const groups = new Map();
  const group = (key, make) => { if (!groups.has(key)) groups.set(key, make()); return groups.get(key); };
  for (const ns of state.namespaces) group('ns:' + ns.ID, () => ({ kind: 'ns', ns, eps: [] }));
  for (const ep of state.endpoints) {
    if (isRemote(ep)) {
      group('peers:' + ep.HostComputeNetwork, () => ({ kind: 'peers', net: netById.get(ep.HostComputeNetwork), netId: ep.HostComputeNetwork, eps: [] })).eps.push(ep);
    } else if (ep.HostComputeNamespace && nsById.has(ep.HostComputeNamespace)) {
      groups.get('ns:' + ep.HostComputeNamespace).eps.push(ep);
    } else {
      group('detached', () => ({ kind: 'detached', eps: [] })).eps.push(ep);
    }
  }

  const PAD = 20, SW_W = 210, SW_H = 74, SW_GAP = 24, UP_H = 30;
  const G_W = 200, EP_H = 58, EP_GAP = 8, G_HEAD = 26, G_GAP = 18;
  const mappingLines = (ep) => Math.min((mappingsByEp.get(ep.ID) || []).length, 3);
  const epHeight = (ep) => EP_H + 13 * mappingLines(ep);
  const groupHeight = (g) => G_HEAD + g.eps.reduce((h, ep) => h + epHeight(ep) + EP_GAP, 0) + (g.eps.length ? 4 : 22);

  const list = [...groups.values()];
  const perRow = Math.max(1, Math.max(nets.length, 4));
  const width = Math.max(PAD * 2 + nets.length * (SW_W + SW_GAP), PAD * 2 + Math.min(list.length, perRow) * (G_W + G_GAP), 760) + 40;
  const upY = 44, swY = upY + UP_H + 50, gY = swY + SW_H + 70;

  // Groups flow in rows.
  const cols = Math.max(1, Math.floor((width - PAD * 2 - 40) / (G_W + G_GAP)));
  const placed = [];
  let rowY = gY, rowH = 0;
  list.forEach((g, i) => {
    const col = i % cols;
    if (col === 0 && i > 0) { rowY += rowH + G_GAP; rowH = 0; }
    const h = groupHeight(g);
    placed.push({ g, x: PAD + 20 + col * (G_W + G_GAP), y: rowY, h });
    rowH = Math.max(rowH, h);
  });
  const lbs = state.loadbalancers;
  const LB_W = 230, LB_H = 48, LB_GAP = 18;
  const lbCols = Math.max(1, Math.floor((width - PAD * 2 - 40) / (LB_W + LB_GAP)));
  const lbY = rowY + rowH + (list.length ? 60 : 10);
  const lbRows = Math.max(1, Math.ceil(lbs.length / lbCols));
  const height = lbY + lbRows * (LB_H + LB_GAP) + PAD;

  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-labelledby': 'topo-title topo-desc',
  });
  root.append(svg('title', { id: 'topo-title', text: 'Host network topology' }));
  root.append(svg('desc', { id: 'topo-desc', text: `${nets.length} networks, ${state.endpoints.length} endpoints, ${state.namespaces.length} compartments, ${state.portmappings.length} port mappings, ${lbs.length} load balancers` }));

  const wires = svg('g', { class: 'wires' });
  const nodes = svg('g', { class: 'nodes' });
  root.append(svg('rect', { class: 'host-box', x: 8, y: 8, width: width - 16, height: height - 16, rx: 10 }));
  root.append(svg('text', { class: 'host-label', x: 22, y: 30, text: 'host' + (state.info && state.info.Version ? ' — hnsd ' + state.info.Version : '') }));
  root.append(wires, nodes);

  // Uplinks (one box per distinct uplink), then switches.
  const uplinks = new Map();
  nets.forEach((n) => { const u = uplinkLabel(n); if (!uplinks.has(u)) uplinks.set(u, uplinks.size); });
  const upW = 150;
  const upX = (i) => PAD + 160 + i * (upW + 16);
  for (const [name, i] of uplinks) {
    nodes.append(svg('g', { class: 'uplink', 'data-uplink': name },
      svg('rect', { x: upX(i), y: upY - 18, width: upW, height: UP_H, rx: 4 }),
      svg('text', { x: upX(i) + 8, y: upY + 2, text: '⇅ ' + truncate(name, 20) })));
  }

  const swPos = new Map();
  nets.forEach((n, i) => {
    const x = PAD + 20 + i * (SW_W + SW_GAP), color = colors.get(n.ID);
    swPos.set(n.ID, { x, y: swY, color, used: 0 });
    const u = uplinks.get(uplinkLabel(n));
    wires.append(svg('path', { class: 'wire', stroke: color, d: `M${upX(u) + upW / 2},${upY + UP_H - 18} C${upX(u) + upW / 2},${swY - 25} ${x + SW_W / 2},${upY + 40} ${x + SW_W / 2},${swY}` }));
    const subnets = subnetsOf(n).map((s) => s.IpAddressPrefix).join(', ');
    const flags = [n.Internal ? 'internal' : ''].filter(Boolean).join(' ');
    nodes.append(svg('g', { class: 'switch', 'data-network-id': n.ID, 'data-name': n.Name },
      svg('title', { text: `network ${n.Name} (${driverOf(n)}) ${subnets} — ${n.ID}` }),
      svg('rect', { x, y: swY, width: SW_W, height: SW_H, rx: 6, stroke: color }),
      svg('rect', { x, y: swY, width: 8, height: SW_H, fill: color, stroke: color }),
      svg('text', { class: 'title', x: x + 16, y: swY + 20, text: truncate(n.Name, 24) }),
      svg('text', { class: 'detail', x: x + 16, y: swY + 38, text: driverOf(n) + (flags ? ' · ' + flags : '') + ' · ' + countEndpoints(n.ID) + ' endpoints' }),
      svg('text', { class: 'detail mono', x: x + 16, y: swY + 56, text: truncate(subnets || 'no subnet', 30) })));
  });
  if (!nets.length) nodes.append(svg('text', { class: 'empty-note', x: PAD + 20, y: swY + 30, text: 'No networks.' }));

  // Groups and endpoints (their positions: where load balancers wire to their backends).
  const epPos = new Map();
  for (const { g, x, y, h } of placed) {
    let title, cls, attrs = {};
    if (g.kind === 'ns') {
      title = 'compartment ' + (g.ns.Name || shortId(g.ns.ID));
      cls = 'compartment';
      attrs = { 'data-namespace-id': g.ns.ID, 'data-name': g.ns.Name || '' };
    } else if (g.kind === 'peers') {
      title = 'overlay peers on ' + (g.net ? g.net.Name : shortId(g.netId));
      cls = 'peers';
      attrs = { 'data-peers-network-id': g.netId };
    } else {
      title = 'not in a compartment';
      cls = 'compartment detached';
    }
    const gEl = svg('g', Object.assign({ class: cls }, attrs),
      svg('rect', { x, y, width: G_W, height: h, rx: 6 }),
      svg('text', { class: 'title', x: x + 8, y: y + 17, text: truncate(title, 30) }));
    if (!g.eps.length) gEl.append(svg('text', { class: 'small', x: x + 8, y: y + G_HEAD + 12, text: 'no endpoints' }));
    let ey = y + G_HEAD;
    for (const ep of g.eps) {
      const sw = swPos.get(ep.HostComputeNetwork);
      const color = sw ? sw.color : '#4a5260';
      const eh = epHeight(ep), ex = x + 8, ew = G_W - 16;
      const maps = mappingsByEp.get(ep.ID) || [];
      const rate = state.rates.get(ep.ID);
      const epEl = svg('g', { class: 'endpoint' + (isRemote(ep) ? ' remote' : ''), 'data-endpoint-id': ep.ID, 'data-name': ep.Name || '', 'data-network-id': ep.HostComputeNetwork },
        svg('title', { text: `endpoint ${ep.Name || ''} ${addrsOf(ep).join(' ')} ${ep.MacAddress || ''} — ${ep.ID}${isRemote(ep) ? ' (remote: an overlay peer on another host)' : ''}` }),
        svg('rect', { x: ex, y: ey, width: ew, height: eh, rx: 4, stroke: color }),
        svg('text', { class: 'name', x: ex + 8, y: ey + 16, text: truncate((isRemote(ep) ? '◇ ' : '') + (ep.Name || shortId(ep.ID)), 26) }),
        svg('text', { class: 'addr mono', x: ex + 8, y: ey + 31, text: truncate(addrsOf(ep).join(' ') || 'no address', 30) }),
        svg('text', { class: 'rate', 'data-rate-for': ep.ID, x: ex + 8, y: ey + 46, text: isRemote(ep) ? 'on another host' : rateText(rate) }));
      maps.slice(0, 3).forEach((m, i) => {
        epEl.append(svg('text', { class: 'port', 'data-portmapping-id': m.ID, x: ex + 8, y: ey + 60 + i * 13, text: truncate('⇢ ' + mappingLabel(m), 32) }));
      });
      if (maps.length > 3) epEl.lastChild.textContent += ` (+${maps.length - 3})`;
      gEl.append(epEl);
      epPos.set(ep.ID, { x: ex + ew / 2, y: ey + eh, color });
      if (sw) {
        // Spread the wires over the switch's bottom edge.
        const sx = sw.x + 20 + (sw.used++ % 9) * ((SW_W - 40) / 8);
        wires.append(svg('path', { class: 'wire', stroke: color, 'data-wire-endpoint-id': ep.ID, d: `M${sx},${swY + SW_H} C${sx},${swY + SW_H + 45} ${ex + ew / 2},${ey - 30} ${ex + ew / 2},${ey}` }));
      }
      ey += eh + EP_GAP;
    }
    nodes.append(gEl);
  }

  // Load balancers: a box per load balancer below the compartments, a dashed wire up to each
  // backend endpoint.
  const lbBox = svg('g', { id: 'loadbalancers' });
  if (!lbs.length) lbBox.append(svg('text', { class: 'empty-note', x: PAD + 20, y: lbY + 24, text: 'No load balancers.' }));
  lbs.forEach((lb, i) => {
    const x = PAD + 20 + (i % lbCols) * (LB_W + LB_GAP), y = lbY + Math.floor(i / lbCols) * (LB_H + LB_GAP);
    const fronts = lbFrontends(lb);
    const backends = lb.HostComputeEndpoints || [];
    lbBox.append(svg('g', { class: 'lb', 'data-loadbalancer-id': lb.ID },
      svg('title', { text: `load balancer ${fronts.join(', ')} over ${backends.length} backends — ${lb.ID}` }),
      svg('rect', { x, y, width: LB_W, height: LB_H, rx: 6 }),
      svg('text', { class: 'title mono', x: x + 10, y: y + 19, text: '⚖ ' + truncate(fronts[0] || 'no port', 30) + (fronts.length > 1 ? ` (+${fronts.length - 1})` : '') }),
      svg('text', { class: 'detail', x: x + 10, y: y + 37, text: truncate(backends.length + ' backends' + (lbFlags(lb).length ? ' · ' + lbFlags(lb).join(' · ') : ''), 36) })));
    backends.forEach((id, j) => {
      const p = epPos.get(id);
      if (!p) return;
      const lx = x + 20 + (j % 8) * ((LB_W - 40) / 7);
      wires.append(svg('path', { class: 'wire lb-wire', 'data-lb-wire': lb.ID + ' ' + id, d: `M${lx},${y} C${lx},${y - 40} ${p.x},${p.y + 40} ${p.x},${p.y}` }));
    });
  });
  nodes.append(lbBox);

  box.replaceChildren(root);
}

function countEndpoints(netId) { return state.endpoints.filter((e) => e.HostComputeNetwork === netId).length; }

function rateText(rate) { return rate ? '↓ ' + fmtRate(rate.rx) + '  ↑ ' + fmtRate(rate.tx) : '↓ –  ↑ –'; }

function renderRates() {
  for (const t of document.querySelectorAll('[data-rate-for]')) {
    const ep = state.endpoints.find((e) => e.ID === t.dataset.rateFor);
    if (ep && !isRemote(ep)) t.textContent = rateText(state.rates.get(ep.ID));
  }
  for (const td of document.querySelectorAll('td[data-rx-for]')) td.textContent = fmtRate(state.rates.get(td.dataset.rxFor)?.rx);
  for (const td of document.querySelectorAll('td[data-tx-for]')) td.textContent = fmtRate(state.rates.get(td.dataset.txFor)?.tx);
}

function renderHealth() {
  const info = state.info || {};
  const facts = document.getElementById('health-facts');
  const v = info.HnsVersion ? `${info.HnsVersion.Major}.${info.HnsVersion.Minor}` : '';
  const rows = [
    ['hnsd', info.Version], ['HNS API', v], ['networks', info.Networks], ['endpoints', info.Endpoints],
    ['compartments', info.Namespaces], ['last reconcile', info.LastReconcile], ['store', info.StorePath], ['run dir', info.RunDir],
  ];
  facts.replaceChildren(...rows.flatMap(([k, val]) => [el('dt', { text: k }), el('dd', { text: val ?? '–' })]));
  const warnings = document.getElementById('warnings');
  const list = info.Warnings || [];
  warnings.replaceChildren(...(list.length
    ? list.map((w) => el('li', { class: 'warning', text: w }))
    : [el('li', { class: 'none', text: 'No warnings.' })]));
  const features = document.getElementById('kernel-features');
  features.replaceChildren(...Object.entries(info.KernelFeatures || {}).map(([k, on]) =>
    el('li', { 'data-on': String(!!on), text: (on ? '✓ ' : '✗ ') + k })));
}

function idCell(id) { return el('td', { class: 'id mono', title: id, text: shortId(id) }); }

function fillTable(id, rows, emptyText) {
  const table = document.getElementById(id);
  const body = table.tBodies[0];
  const cols = table.tHead.rows[0].cells.length;
  body.replaceChildren(...(rows.length ? rows : [el('tr', { class: 'empty' }, el('td', { colspan: cols, text: emptyText }))]));
  for (const tr of body.rows) {
    if (!tr.classList.contains('empty')) tr.dataset.search = tr.textContent.toLowerCase() + ' ' + (tr.dataset.key || '').toLowerCase();
  }
}

function renderTables() {
  const netById = new Map(state.networks.map((n) => [n.ID, n]));
  const nsById = new Map(state.namespaces.map((n) => [n.ID, n]));
  const epById = new Map(state.endpoints.map((e) => [e.ID, e]));

  fillTable('networks-table', state.networks.map((n) => el('tr', { 'data-network-id': n.ID, 'data-key': n.ID },
    el('td', { text: n.Name }), el('td', { text: driverOf(n) }),
    el('td', { class: 'mono', text: subnetsOf(n).map((s) => s.IpAddressPrefix).join(', ') || '–' }),
    el('td', { class: 'mono', text: gatewaysOf(n).join(', ') || '–' }),
    el('td', { text: uplinkLabel(n) }),
    el('td', {}, n.Internal ? el('span', { class: 'tag', text: 'internal' }) : ''),
    el('td', { class: 'num', text: countEndpoints(n.ID) }), idCell(n.ID))), 'No networks.');

  fillTable('endpoints-table', state.endpoints.map((e) => {
    const ns = nsById.get(e.HostComputeNamespace);
    const rate = state.rates.get(e.ID);
    return el('tr', { 'data-endpoint-id': e.ID, 'data-key': e.ID + ' ' + (e.HostComputeNamespace || '') },
      el('td', { text: e.Name || '–' }),
      el('td', { text: netById.get(e.HostComputeNetwork)?.Name || shortId(e.HostComputeNetwork) }),
      el('td', { text: ns ? (ns.Name || shortId(ns.ID)) : (e.HostComputeNamespace ? shortId(e.HostComputeNamespace) : '–') }),
      el('td', { class: 'mono', text: addrsOf(e).join(', ') || '–' }),
      el('td', { class: 'mono', text: e.MacAddress || '–' }),
      el('td', {}, isRemote(e) ? el('span', { class: 'tag remote', text: 'overlay peer (remote)' }) : el('span', { class: 'tag', text: 'local' })),
      el('td', { class: 'num', 'data-rx-for': e.ID, text: fmtRate(rate?.rx) }),
      el('td', { class: 'num', 'data-tx-for': e.ID, text: fmtRate(rate?.tx) }),
      idCell(e.ID));
  }), 'No endpoints.');

  fillTable('namespaces-table', state.namespaces.map((ns) => {
    const eps = state.endpoints.filter((e) => e.HostComputeNamespace === ns.ID);
    return el('tr', { 'data-namespace-id': ns.ID, 'data-key': ns.ID },
      el('td', { text: ns.Name || '–' }),
      el('td', { text: eps.map((e) => e.Name || shortId(e.ID)).join(', ') || '–' }),
      el('td', { class: 'mono', text: ns.Pid ? ns.Pid + (ns.Command && ns.Command.length ? ' ' + ns.Command.join(' ') : '') : '–' }),
      el('td', { class: 'mono', text: ns.NetNsPath || '–' }), idCell(ns.ID));
  }), 'No compartments.');

  fillTable('portmappings-table', state.portmappings.map((m) => {
    const ep = epById.get(m.EndpointId);
    return el('tr', { 'data-portmapping-id': m.ID, 'data-endpoint-id': m.EndpointId, 'data-key': m.EndpointId },
      el('td', { class: 'mono', text: `${m.ExternalIp}:${m.ExternalPort}` }),
      el('td', { text: m.Protocol }),
      el('td', { class: 'mono', text: `${m.EndpointName || (ep && ep.Name) || shortId(m.EndpointId)} ${m.InternalIp}:${m.InternalPort}` }),
      el('td', { text: m.NetworkName }), el('td', { text: m.Namespace || '–' }),
      el('td', { class: 'mono', text: m.RemotePrefix || '–' }),
      el('td', { text: m.Active ? 'yes' : 'no (not attached)' }));
  }), 'No port mappings.');

  fillTable('loadbalancers-table', state.loadbalancers.map((lb) => {
    const backends = (lb.HostComputeEndpoints || []).map((id) => epById.get(id)?.Name || shortId(id));
    const addrs = (lb.HostComputeEndpoints || []).flatMap((id) => (epById.get(id)?.IpConfigurations || []).map((c) => c.IpAddress));
    return el('tr', { 'data-loadbalancer-id': lb.ID, 'data-key': lb.ID + ' ' + (lb.HostComputeEndpoints || []).join(' ') + ' ' + addrs.join(' ') },
      el('td', { class: 'mono', text: lbFrontends(lb).join(', ') || '–' }),
      el('td', { text: backends.join(', ') || 'none (refuses connections)' }),
      el('td', {}, ...lbFlags(lb).map((f) => el('span', { class: 'tag', text: f }))),
      idCell(lb.ID));
  }), 'No load balancers.');
}

// One search box filters the rows of every table (and dims the drawing's other endpoints).
function applySearch() {
  const q = document.getElementById('search').value.trim().toLowerCase();
  let shown = 0, total = 0;
  for (const table of document.querySelectorAll('main table')) {
    let n = 0, t = 0;
    for (const tr of table.tBodies[0].rows) {
      if (tr.classList.contains('empty')) continue;
      t++;
      const hit = !q || (tr.dataset.search || '').includes(q);
      tr.hidden = !hit;
      if (hit) n++;
    }
    shown += n; total += t;
    const c = table.querySelector('caption .count');
    if (c) c.textContent = q ? `(${n} of ${t})` : `(${t})`;
  }
  for (const g of document.querySelectorAll('#topology .endpoint')) {
    const row = document.querySelector(`#endpoints-table tr[data-endpoint-id="${CSS.escape(g.dataset.endpointId)}"]`);
    g.classList.toggle('dim', !!q && !!row && row.hidden);
  }
  document.getElementById('search-summary').textContent = q ? `${shown} of ${total} rows match “${q}”.` : '';
}

// ---------- start ----------

document.getElementById('search').addEventListener('input', applySearch);
refresh();
followEvents();
pollMetrics();
setInterval(pollMetrics, METRICS_MS);
