/* morphocell review page: the behaviour of index.html.
 *
 * Data: window.MORPHOCELL_REVIEW (data.js), one entry per cell:
 *   p path as in the predictions table, f absolute path (exported), i file id, c predicted class
 *   index (-1: not classified), q class probabilities, r needs review, u unlike training,
 *   a p_atypical, s status, e error, x full-size image extension ("" none), o outlines written,
 *   m image missing, w why it could not be read, v measurements (D.features order),
 *   d (repeats only) the row of the first listing of the same image: one cell, counted once.
 * Every string from the data reaches the page through textContent, setAttribute or dataset:
 * never through innerHTML.
 */
(function () {
  'use strict';

  const D = window.MORPHOCELL_REVIEW;
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };

  if (!D || !Array.isArray(D.cells)) {
    $('grid').appendChild(el('p', 'warn', 'data.js is missing or damaged: write the page again ' +
      'with "morphocell review".'));
    return;
  }

  const classes = D.classes.map(String);
  const ART = String(D.artefact);
  const UNCLASSIFIED = '';
  const cells = D.cells;
  const N = cells.length;
  const STORE = 'morphocell-review:' + D.page_id;
  const Z = 1.959963984540054;
  const classIndex = new Map(classes.map((c, k) => [c, k]));
  const atypical = new Set((D.atypical || []).map(String));
  const keyOf = new Map();
  classes.forEach((c, k) => { if (k < 9) keyOf.set(c, String(k + 1)); });
  keyOf.set(ART, '0');
  const labelOfKey = new Map([...keyOf].map(([c, k]) => [k, c]));

  const pred = cells.map((c) => (c.c >= 0 && c.c < classes.length ? classes[c.c] : UNCLASSIFIED));
  // a row repeating an image listed before shows the same cell: same label, counted once
  const root = cells.map((c, i) => (Number.isInteger(c.d) && c.d >= 0 && c.d < i ? c.d : i));
  const members = new Map();
  root.forEach((r, i) => { if (r !== i) { if (!members.has(r)) members.set(r, [r]); members.get(r).push(i); } });
  const copiesOf = (r) => members.get(r) || [r];
  const isFirst = (i) => root[i] === i;
  const label = pred.map((p, i) => pred[root[i]]);
  let undoStack = [];
  const figs = new Array(N);
  const groups = new Map();
  const count = new Map();
  const reviewCount = new Map();
  let cur = -1;
  let detailOpen = false;
  let visibleCache = null;

  const isLabel = (v) => v === ART || classIndex.has(v);

  // -- persistence ---------------------------------------------------------------------------
  function load() {
    let s = null;
    try { s = JSON.parse(window.localStorage.getItem(STORE) || 'null'); } catch (e) { s = null; }
    if (!s || typeof s !== 'object') return;
    const labels = s.labels && typeof s.labels === 'object' ? s.labels : {};
    for (const k of Object.keys(labels)) {
      const i = Number(k);
      const v = labels[k];
      if (Number.isInteger(i) && i >= 0 && i < N && (isLabel(v) || v === pred[i])) label[i] = v;
    }
    for (let i = 0; i < N; i++) label[i] = label[root[i]];
    if (Array.isArray(s.undo)) {
      undoStack = s.undo.filter((u) => Array.isArray(u) && u.length === 3 &&
        Number.isInteger(u[0]) && u[0] >= 0 && u[0] < N &&
        typeof u[1] === 'string' && typeof u[2] === 'string');
    }
  }

  function save() {
    const labels = {};
    for (let i = 0; i < N; i++) if (isFirst(i) && label[i] !== pred[i]) labels[i] = label[i];
    try {
      window.localStorage.setItem(STORE, JSON.stringify({
        labels: labels, undo: undoStack.slice(-1000), saved: new Date().toISOString(),
      }));
    } catch (e) { /* storage full or disabled: the page still works, without memory */ }
  }

  // -- helpers -------------------------------------------------------------------------------
  const conf = (i, lab) => {
    const q = cells[i].q;
    const k = classIndex.get(lab);
    if (!q || k === undefined || q[k] === null) return -1;
    return q[k];
  };
  const baseName = (p) => { const s = String(p); const k = Math.max(s.lastIndexOf('/'), s.lastIndexOf('\\')); return s.slice(k + 1); };
  const pct = (x, d) => (Number.isFinite(x) ? x.toFixed(d === undefined ? 1 : d) : '–');
  function wilson(k, n) {
    if (n <= 0) return [NaN, NaN];
    const p = k / n; const z2 = Z * Z; const den = 1 + z2 / n;
    const centre = (p + z2 / (2 * n)) / den;
    const half = Z * Math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den;
    return [Math.max(0, centre - half), Math.min(1, centre + half)];
  }
  function fmtValue(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '–';
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return v.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 2);
  }
  const groupName = (lab) => (lab === ART ? 'Not a leukocyte / artefact'
    : lab === UNCLASSIFIED ? 'Not classified' : ((D.display && D.display[lab]) || lab));

  // -- building ------------------------------------------------------------------------------
  const io = 'IntersectionObserver' in window ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      const img = e.target.querySelector('img[data-src]');
      if (img) { img.src = img.dataset.src; img.removeAttribute('data-src'); }
      io.unobserve(e.target);
    }
  }, { rootMargin: '600px 0px' }) : null;

  function makeGroup(lab) {
    const sec = el('section', 'group');
    sec.dataset.group = lab;
    if (lab === ART || lab === UNCLASSIFIED) sec.classList.add('extra');
    const h = el('h2');
    const box = el('div', 'cells');
    box.setAttribute('role', 'list');
    sec.append(h, box);
    $('grid').appendChild(sec);
    groups.set(lab, { sec: sec, head: h, box: box });
  }

  function makeCell(i) {
    const c = cells[i];
    const fig = el('figure', 'cell');
    fig.tabIndex = -1;
    fig.setAttribute('role', 'listitem');
    fig.dataset.path = String(c.p);
    fig.dataset.index = String(i);
    fig.title = String(c.p);
    if (c.x) {
      const img = el('img');
      img.alt = '';
      img.decoding = 'async';
      img.dataset.src = 'thumbs/' + c.i + '.jpg';
      fig.appendChild(img);
      if (io) io.observe(fig); else img.src = img.dataset.src;
    } else {
      fig.appendChild(el('div', 'placeholder', c.m ? 'image missing' : 'not readable'));
      fig.classList.add('missing');
    }
    const badges = el('div', 'badges');
    if (c.r) { fig.classList.add('nr'); const b = el('span', 'badge b-nr', '?'); b.title = 'needs review: the model is not sure'; badges.appendChild(b); }
    if (c.u) { fig.classList.add('ut'); const b = el('span', 'badge b-ut', '≠'); b.title = 'unlike the training images (stain or size)'; badges.appendChild(b); }
    if (!isFirst(i)) { fig.classList.add('repeat'); const b = el('span', 'badge b-rep', '='); b.title = 'the same image as ' + cells[root[i]].p + ' (counted once)'; badges.appendChild(b); }
    const fix = el('span', 'badge b-fix', '✎');
    badges.appendChild(fix);
    fig.appendChild(badges);
    const cap = el('figcaption');
    cap.appendChild(el('span', 'name', baseName(c.p)));
    cap.appendChild(el('span', 'conf'));
    fig.appendChild(cap);
    figs[i] = fig;
    return fig;
  }

  function decorate(i) {
    const fig = figs[i];
    const lab = label[i];
    fig.dataset.class = lab;
    const corrected = lab !== pred[i];
    fig.classList.toggle('corrected', corrected);
    fig.querySelector('.b-fix').title = corrected
      ? 'relabelled (predicted: ' + (pred[i] || 'not classified') + ')' : '';
    const p = conf(i, lab);
    fig.querySelector('.conf').textContent = p >= 0 ? Math.round(100 * p) + '%' : '';
  }

  function sortedIndices(lab) {
    const idx = [];
    for (let i = 0; i < N; i++) if (label[i] === lab) idx.push(i);
    idx.sort((a, b) => conf(a, lab) - conf(b, lab) || a - b);
    return idx;
  }

  function build() {
    for (const lab of [...classes, ART, UNCLASSIFIED]) { makeGroup(lab); count.set(lab, 0); reviewCount.set(lab, 0); }
    for (let i = 0; i < N; i++) {
      makeCell(i);
      if (!isFirst(i)) continue;
      count.set(label[i], count.get(label[i]) + 1);
      if (cells[i].r) reviewCount.set(label[i], reviewCount.get(label[i]) + 1);
    }
    for (const [lab, g] of groups) {
      const frag = document.createDocumentFragment();
      for (const i of sortedIndices(lab)) { decorate(i); frag.appendChild(figs[i]); }
      g.box.appendChild(frag);
      updateHead(lab);
    }
  }

  function updateHead(lab) {
    const g = groups.get(lab);
    const k = count.get(lab);
    g.head.textContent = '';
    g.head.appendChild(el('span', 'gname', groupName(lab)));
    g.head.appendChild(el('span', 'gcount', k + (k === 1 ? ' cell' : ' cells')));
    if (keyOf.has(lab)) g.head.appendChild(el('kbd', null, keyOf.get(lab)));
    if (atypical.has(lab)) g.head.appendChild(el('span', 'atyp', 'atypical'));
    if (lab === ART) g.head.appendChild(el('span', 'muted', 'not counted'));
    if (k > 0) g.head.appendChild(el('span', 'muted', 'least sure first'));
    g.sec.classList.toggle('empty', k === 0);
  }

  // -- the differential ---------------------------------------------------------------------
  // As analysers report it: the WBC differential per 100 leukocytes (Wilson 95% interval),
  // nucleated red cells (erythroblasts) per 100 WBC, platelets counted apart.
  const nrbc = new Set((D.nrbc || []).map(String));
  const platelets = new Set((D.platelets || []).map(String));
  const wbc = classes.filter((c) => !nrbc.has(c) && !platelets.has(c));
  const shown = (c) => (D.display && D.display[c]) || c;

  function classRow(c, cells6) {
    const tr = el('tr');
    tr.dataset.row = c;
    if (atypical.has(c)) tr.classList.add('atypical');
    if (atypical.has(c) && count.get(c) > 0) tr.classList.add('flagged');
    tr.append(el('td', 'key', keyOf.get(c) || ''), el('th', 'cls', shown(c)), ...cells6);
    return tr;
  }

  function renderTable() {
    const tbody = $('differential').tBodies[0];
    const tfoot = $('differential').tFoot;
    let n = 0;
    for (const c of wbc) n += count.get(c);
    const rv = (c) => el('td', 'review', D.has_review ? reviewCount.get(c) : '–');
    const rows = [];
    for (const c of wbc) {
      const k = count.get(c);
      const [lo, hi] = wilson(k, n);
      rows.push(classRow(c, [el('td', 'count', k), el('td', 'pct', n ? pct(100 * k / n) : '–'),
        el('td', 'ci', n ? pct(100 * lo) + '–' + pct(100 * hi) : '–'), rv(c)]));
    }
    const total = el('tr', 'total');
    total.dataset.row = 'wbc';
    let nr = 0;
    for (const c of wbc) nr += reviewCount.get(c);
    total.append(el('td'), el('th', null, 'leukocytes (WBC)'), el('td', 'count', n),
      el('td', 'pct', n ? '100.0' : '–'), el('td'), el('td', 'review', D.has_review ? nr : '–'));
    rows.push(total);
    for (const c of classes) {
      if (nrbc.has(c)) {
        const k = count.get(c);
        rows.push(classRow(c, [el('td', 'count', k),
          el('td', 'pct', n ? pct(100 * k / n) : '–'), el('td', 'ci', 'per 100 WBC'), rv(c)]));
      } else if (platelets.has(c)) {
        rows.push(classRow(c, [el('td', 'count', count.get(c)), el('td', 'pct', ''),
          el('td', 'ci', 'counted apart'), rv(c)]));
      }
    }
    for (const tr of rows.slice(wbc.length + 1)) tr.classList.add('apart');
    tbody.replaceChildren(...rows);
    const art = el('tr', 'other');
    art.dataset.row = ART;
    art.append(el('td', 'key', '0'), el('th', null, 'not a leukocyte / artefact (not counted)'),
      el('td', 'count', count.get(ART)), el('td'), el('td'), el('td'));
    const un = el('tr', 'other');
    un.dataset.row = 'unclassified';
    un.append(el('td'), el('th', null, 'not classified'), el('td', 'count', count.get(UNCLASSIFIED)),
      el('td'), el('td'), el('td'));
    tfoot.replaceChildren(art, un);
    renderFlags(n);
  }

  function renderFlags(n) {
    const ul = $('flags');
    const items = [];
    const present = classes.filter((c) => atypical.has(c) && count.get(c) > 0);
    if (present.length) {
      const li = el('li', 'flag');
      li.textContent = 'Atypical classes present: ' + present.map((c) =>
        shown(c) + ' ' + count.get(c) + (n ? ' (' + pct(100 * count.get(c) / n) + ' per 100 WBC)' : '')).join(', ');
      items.push(li);
    } else {
      items.push(el('li', 'ok', 'No atypical class present' +
        (atypical.size ? ' (' + [...atypical].map(shown).join(', ') + ')' : '')));
    }
    let classified = 0; let nrAll = 0; let unlike = 0; let missing = 0; let corrected = 0;
    let repeats = 0;
    for (let i = 0; i < N; i++) {
      if (!isFirst(i)) { repeats++; continue; }
      if (pred[i] !== UNCLASSIFIED) { classified++; if (cells[i].r) nrAll++; if (cells[i].u) unlike++; }
      if (cells[i].m) missing++;
      if (label[i] !== pred[i]) corrected++;
    }
    if (D.has_review) {
      const li = el('li', nrAll ? 'flag' : 'ok', nrAll + ' of ' + classified + ' cells (' +
        pct(100 * nrAll / Math.max(classified, 1)) + '%) need review' +
        (Number.isFinite(D.review_threshold) ? ' (top class probability below ' +
          D.review_threshold.toFixed(3) + ')' : ''));
      li.id = 'flag-review';
      items.push(li);
    }
    if (D.has_unlike) {
      const share = unlike / Math.max(classified, 1);
      const li = el('li', share > 0.05 ? 'flag' : 'ok', unlike + ' of ' + classified +
        ' cells (' + pct(100 * share) + '%) are unlike the training images (stain or size)' +
        (share > 0.05 ? ': another lab, stain or scanner? the count may be unreliable' : ''));
      li.id = 'flag-unlike';
      items.push(li);
    }
    if (missing) items.push(el('li', 'flag', missing + ' image' + (missing === 1 ? '' : 's') +
      ' no longer exist' + (missing === 1 ? 's' : '') + ' (shown as placeholders, left out of the export)'));
    if (repeats) items.push(el('li', 'muted', repeats + ' row' + (repeats === 1 ? ' repeats' : 's repeat') +
      ' an image listed before (same content): shown again, counted once'));
    const li = el('li', 'muted', corrected + ' cell' + (corrected === 1 ? '' : 's') + ' relabelled');
    li.id = 'flag-corrected';
    items.push(li);
    ul.replaceChildren(...items);
  }

  function renderModelLine() {
    const m = D.model || {};
    const parts = [];
    parts.push('model: ' + (m.name || 'not given') + (m.features ? ' (' + m.features + ')' : ''));
    if (m.trained) parts.push('trained ' + String(m.trained).replace('T', ' ').replace('+00:00', ' UTC'));
    parts.push('predictions: ' + D.source + ' (' + N + ' cells)');
    parts.push('page written ' + String(D.written).replace('T', ' ').replace('+00:00', ' UTC'));
    $('model-line').textContent = parts.join(' · ');
  }

  // -- selection and moving -----------------------------------------------------------------
  const filterOn = () => $('filter-review').checked;

  function visible() {
    if (visibleCache) return visibleCache;
    const out = [];
    const only = filterOn();
    for (const lab of [...classes, ART, UNCLASSIFIED]) {
      for (const f of groups.get(lab).box.children) {
        const i = Number(f.dataset.index);
        if (!only || cells[i].r) out.push(i);
      }
    }
    visibleCache = out;
    return out;
  }

  function select(i, focus) {
    if (cur >= 0 && figs[cur]) { figs[cur].tabIndex = -1; figs[cur].classList.remove('selected'); }
    cur = i;
    if (i < 0) return;
    figs[i].tabIndex = 0;
    figs[i].classList.add('selected');
    if (focus !== false) {
      figs[i].focus({ preventScroll: true });
      figs[i].scrollIntoView({ block: 'nearest' });
    }
  }

  function columns(i) {
    const box = figs[i].parentElement;
    const cols = getComputedStyle(box).gridTemplateColumns.split(' ').filter(Boolean).length;
    return Math.max(1, cols);
  }

  function step(delta) {
    const vis = visible();
    if (!vis.length) return;
    let k = vis.indexOf(cur);
    if (k < 0) { select(vis[0]); return; }
    k = Math.min(vis.length - 1, Math.max(0, k + delta));
    select(vis[k]);
    if (detailOpen) showDetail(vis[k]);
  }

  function place(i) {
    const lab = label[i];
    const box = groups.get(lab).box;
    const kids = box.children;
    const p = conf(i, lab);
    let lo = 0; let hi = kids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const j = Number(kids[mid].dataset.index);
      const q = conf(j, lab);
      if (q < p || (q === p && j < i)) lo = mid + 1; else hi = mid;
    }
    box.insertBefore(figs[i], lo < kids.length ? kids[lo] : null);
  }

  function apply(i, lab) {
    const r = root[i];
    const old = label[r];
    if (old === lab) return;
    count.set(old, count.get(old) - 1);
    count.set(lab, count.get(lab) + 1);
    if (cells[r].r) {
      reviewCount.set(old, reviewCount.get(old) - 1);
      reviewCount.set(lab, reviewCount.get(lab) + 1);
    }
    for (const m of copiesOf(r)) {
      label[m] = lab;
      decorate(m);
      place(m);
    }
    visibleCache = null;
    updateHead(old);
    updateHead(lab);
    renderTable();
    $('undo').disabled = undoStack.length === 0;
  }

  function relabel(i, lab) {
    if (i < 0 || !isLabel(lab) || label[i] === lab) return;
    let next = -1;
    if (!detailOpen) {
      const vis = visible();
      const k = vis.indexOf(i);
      if (k >= 0) next = k + 1 < vis.length ? vis[k + 1] : (k > 0 ? vis[k - 1] : -1);
    }
    undoStack.push([root[i], label[i], lab]);
    apply(i, lab);
    save();
    if (detailOpen) showDetail(i);
    else if (next >= 0) select(next);
    else select(i);
  }

  function undo() {
    const u = undoStack.pop();
    if (!u) return;
    const [i, from] = u;
    if (from === label[i] || !(isLabel(from) || from === pred[i])) { save(); $('undo').disabled = undoStack.length === 0; return; }
    apply(i, from);
    save();
    select(i);
    if (detailOpen) showDetail(i);
  }

  // -- detail panel -------------------------------------------------------------------------
  function showDetail(i) {
    const c = cells[i];
    detailOpen = true;
    $('detail').hidden = false;
    document.body.classList.add('detail-open');
    select(i, false);
    const lab = label[i];
    $('detail-title').textContent = groupName(lab) + (lab !== pred[i]
      ? ' (relabelled; predicted ' + (pred[i] || 'nothing') + ')' : '');
    const viewer = $('viewer');
    viewer.replaceChildren();
    if (c.x) {
      const img = el('img', 'full');
      img.alt = 'cell image';
      img.src = 'full/' + c.i + '.' + c.x;
      viewer.appendChild(img);
      if (c.o) {
        const n = el('img', 'outline nucleus'); n.alt = ''; n.src = 'outlines/' + c.i + '_n.png';
        const y = el('img', 'outline cytoplasm'); y.alt = ''; y.src = 'outlines/' + c.i + '_c.png';
        viewer.append(y, n);
      }
    } else {
      viewer.appendChild(el('div', 'placeholder big', c.m ? 'image missing' : 'not readable'));
    }
    syncOutlines();
    $('detail-path').textContent = String(c.p);
    const st = [];
    if (pred[i]) st.push('predicted ' + pred[i] + ' (' + pct(100 * conf(i, pred[i])) + '%)');
    else st.push('not classified');
    if (c.r) st.push('needs review');
    if (c.u) st.push('unlike the training images');
    if (Number.isFinite(c.a) && atypical.size) st.push('p(atypical) ' + c.a.toFixed(2));
    if (c.m) st.push('image missing');
    if (c.w) st.push(c.w);
    if (c.e) st.push(c.e);
    $('detail-status').textContent = st.join(' · ');
    const top = $('detail-top');
    const rows = [];
    if (c.q) {
      const order = classes.map((name, k) => [name, c.q[k]]).filter((t) => t[1] !== null)
        .sort((a, b) => b[1] - a[1]).slice(0, 3);
      for (const [name, p] of order) {
        const tr = el('tr');
        const m = el('meter');
        m.min = 0; m.max = 1; m.value = p;
        const td = el('td'); td.appendChild(m);
        tr.append(el('th', null, name), td, el('td', 'num', pct(100 * p) + '%'));
        rows.push(tr);
      }
    } else {
      rows.push(el('tr', null, 'no prediction'));
    }
    top.replaceChildren(...rows);
    const ft = $('detail-features');
    const frows = [];
    (D.features || []).forEach((f, k) => {
      const tr = el('tr');
      const th = el('th', null, f.label);
      th.title = f.name + ': ' + f.description;
      tr.append(th, el('td', 'num', fmtValue(c.v ? c.v[k] : null)), el('td', 'unit', f.unit));
      frows.push(tr);
    });
    if (!frows.length) frows.push(el('tr', null, 'no measurements (page written without masks)'));
    ft.replaceChildren(...frows);
    for (const b of $('detail-classes').children) {
      b.setAttribute('aria-pressed', b.dataset.label === lab ? 'true' : 'false');
    }
  }

  function closeDetail() {
    detailOpen = false;
    $('detail').hidden = true;
    document.body.classList.remove('detail-open');
    if (cur >= 0) select(cur);
  }

  function syncOutlines() {
    $('viewer').classList.toggle('hide-nucleus', !$('show-nucleus').checked);
    $('viewer').classList.toggle('hide-cytoplasm', !$('show-cytoplasm').checked);
  }

  function buildClassButtons() {
    const box = $('detail-classes');
    for (const lab of [...classes, ART]) {
      const b = el('button', 'class-button');
      b.type = 'button';
      b.dataset.label = lab;
      if (keyOf.has(lab)) b.appendChild(el('kbd', null, keyOf.get(lab)));
      b.appendChild(el('span', null, groupName(lab)));
      b.addEventListener('click', () => relabel(cur, lab));
      box.appendChild(b);
    }
  }

  // -- export -------------------------------------------------------------------------------
  // RFC 4180 quoting, after the quote morphocell's CSV files put before text a spreadsheet
  // would run as a formula (morphocell.io.load_manifest removes it again)
  const csvField = (v) => {
    const s = /^[=+\-@\t\r]/.test(v) ? "'" + v : v;
    return /[",\r\n]/.test(s) || s !== s.trim() ? '"' + s.replace(/"/g, '""') + '"' : s;
  };

  function exportText() {
    const lines = ['path,label'];
    for (let i = 0; i < N; i++) {
      // not classified, reviewed as not a leukocyte, or the image gone: no training label
      if (!isFirst(i) || label[i] === UNCLASSIFIED || label[i] === ART || cells[i].m) continue;
      lines.push(csvField(String(cells[i].f)) + ',' + csvField(label[i]));
    }
    return lines.join('\n') + '\n';
  }

  function exportLabels() {
    const blob = new Blob([exportText()], { type: 'text/csv' });
    const url = URL.createObjectURL(blob);
    const a = el('a');
    a.href = url;
    a.download = 'labels.csv';
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // -- events -------------------------------------------------------------------------------
  function onKey(ev) {
    if (ev.altKey) return;
    const t = ev.target;
    const typing = t && (t.tagName === 'INPUT' || t.tagName === 'BUTTON' || t.tagName === 'SELECT');
    const k = ev.key;
    if ((ev.ctrlKey || ev.metaKey) && (k === 'z' || k === 'Z')) { ev.preventDefault(); undo(); return; }
    if (ev.ctrlKey || ev.metaKey) return;
    if (typing && (k === 'Enter' || k === ' ')) return;
    if (detailOpen) {
      if (k === 'Escape') { ev.preventDefault(); closeDetail(); return; }
      if (k === 'ArrowLeft' || k === 'ArrowUp') { ev.preventDefault(); step(-1); return; }
      if (k === 'ArrowRight' || k === 'ArrowDown') { ev.preventDefault(); step(1); return; }
      if (k === 'n' || k === 'N') { $('show-nucleus').checked = !$('show-nucleus').checked; syncOutlines(); return; }
      if (k === 'c' || k === 'C') { $('show-cytoplasm').checked = !$('show-cytoplasm').checked; syncOutlines(); return; }
    } else {
      if (k === 'ArrowLeft') { ev.preventDefault(); step(-1); return; }
      if (k === 'ArrowRight') { ev.preventDefault(); step(1); return; }
      if (k === 'ArrowUp') { ev.preventDefault(); step(cur >= 0 ? -columns(cur) : 0); return; }
      if (k === 'ArrowDown') { ev.preventDefault(); step(cur >= 0 ? columns(cur) : 0); return; }
      if ((k === 'Enter' || k === ' ') && cur >= 0) { ev.preventDefault(); showDetail(cur); return; }
      if (k === 'r' || k === 'R') { $('filter-review').checked = !filterOn(); onFilter(); return; }
    }
    if (k === 'z' || k === 'Z') { ev.preventDefault(); undo(); return; }
    if (labelOfKey.has(k) && cur >= 0) { ev.preventDefault(); relabel(cur, labelOfKey.get(k)); }
  }

  function onFilter() {
    document.body.classList.toggle('only-review', filterOn());
    visibleCache = null;
    if (cur >= 0 && filterOn() && !cells[cur].r) select(-1);
  }

  function init() {
    load();
    renderModelLine();
    build();
    buildClassButtons();
    renderTable();
    $('undo').disabled = undoStack.length === 0;
    $('grid').addEventListener('click', (ev) => {
      const fig = ev.target.closest('.cell');
      if (!fig) return;
      const i = Number(fig.dataset.index);
      select(i);
      showDetail(i);
    });
    $('grid').addEventListener('focusin', (ev) => {
      const fig = ev.target.closest && ev.target.closest('.cell');
      if (fig && Number(fig.dataset.index) !== cur) select(Number(fig.dataset.index), false);
    });
    $('detail').addEventListener('click', (ev) => { if (ev.target === $('detail')) closeDetail(); });
    $('detail-close').addEventListener('click', closeDetail);
    $('show-nucleus').addEventListener('change', syncOutlines);
    $('show-cytoplasm').addEventListener('change', syncOutlines);
    $('filter-review').addEventListener('change', onFilter);
    $('undo').addEventListener('click', undo);
    $('export').addEventListener('click', exportLabels);
    document.addEventListener('keydown', onKey);
    window.addEventListener('storage', (ev) => { if (ev.key === STORE) window.location.reload(); });
    if (!D.has_review) $('filter-review').disabled = true;
    const vis = visible();
    if (vis.length) select(vis[0], false);
    window.MorphocellReview = Object.freeze({
      exportText: exportText,
      labels: () => label.slice(),
      counts: () => Object.fromEntries(count),
    });
    document.documentElement.dataset.ready = '1';
    if (window.performance && performance.mark) performance.mark('review-ready');
  }

  init();
}());
