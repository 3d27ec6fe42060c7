/* captum-paths path explorer: four linked views over the data embedded in #explorer-data.
   Plotly (embedded above this script) draws the charts; everything else is plain DOM. */
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('explorer-data').textContent);
  var PLOT = {displaylogo: false, responsive: true};
  var primary = D.meta.primary;
  var method = primary;  // the method the class and neuron views show (set by the address)
  var showCausal = true;  // the class view draws causal edges where the page holds them (a checkbox hides them)
  // Dictionaries of the data are read by own property only: a key from the address or a name
  // ('constructor', '__proto__') never reaches Object.prototype.
  function own(dict, key) {
    return dict !== null && dict !== undefined && Object.prototype.hasOwnProperty.call(dict, key) ? dict[key]
      : undefined;
  }
  var graphMethods = D.meta.methods.filter(function (m) { return own(D.graphs, m); });
  var classIndex = new Map();  // typed text -> class
  D.classes.labels.forEach(function (label, c) {
    classIndex.set(String(label), c);
    classIndex.set(String(D.classes.names[c]), c);
  });

  // ------------------------------------------------------------------ helpers
  // Plotly reads the text it draws (titles, tick labels, legend, hover) as its own markup: <b>, <a href>,
  // entities, %{...} in hover templates. Every name from the data goes to it through plain(), which
  // writes & < > " ' % $ as entities, so Plotly draws the name as it is.
  function plain(text) {
    return String(text).replace(/[&<>"'%$]/g, function (ch) { return '&#' + ch.charCodeAt(0) + ';'; });
  }
  function $(sel, root) { return (root || document).querySelector(sel); }
  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'text') node.textContent = attrs[k];
      else if (k === 'onclick') node.addEventListener('click', attrs[k]);
      else if (k.slice(0, 5) === 'data-' || k === 'title' || k === 'href' || k === 'src' || k === 'alt' ||
               k === 'class' || k === 'id' || k === 'type' || k === 'list' || k === 'placeholder')
        node.setAttribute(k, attrs[k]);
      else node[k] = attrs[k];
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function num(v, unit) {
    if (v === null || v === undefined || (typeof v === 'number' && isNaN(v))) return '–';
    if (typeof v !== 'number') return String(v);
    if (unit === '% of p(y)') return (100 * v).toFixed(1) + '%';
    if (unit === 'points') return (100 * v).toFixed(1);
    if (unit === 'count' || Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(3) : v.toPrecision(3);
  }
  function column(key) { return own(D.columns, key) || [String(key).replace(/_/g, ' '), '', '']; }
  function className(c) {
    var label = String(D.classes.labels[c]), name = String(D.classes.names[c]);
    return name === label ? label : label + ' · ' + name;
  }
  function nodeKey(layer, neuron) { return layer + ':' + neuron; }
  // paths over attention heads, or heads and FFN neurons interleaved block by block (heads first)
  var kinds = D.meta.kinds || [];
  var hasHeads = kinds.indexOf('head') >= 0, mixed = hasHeads && kinds.indexOf('neuron') >= 0;
  function layerLabel(l) {
    if (!hasHeads) return 'layer ' + l;
    if (!mixed) return 'block ' + l + ' heads';
    return 'block ' + Math.floor(l / 2) + (kinds[l] === 'head' ? ' heads' : ' FFN');
  }
  function unitName(l) { return kinds[l] === 'head' ? 'head' : 'neuron'; }
  var layerAxis = {title: {text: hasHeads ? '' : 'layer'}, tickvals: kinds.map(function (k, l) { return l; }),
                   ticktext: kinds.map(function (k, l) { return hasHeads ? layerLabel(l).replace('block ', 'b') : String(l); }),
                   zeroline: false};
  function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }
  // addresses of the class and neuron views; the method is left out for the first one
  function withMethod(hash, m) { return m && m !== primary ? hash + '/' + encodeURIComponent(m) : hash; }
  function classHref(c, m) { return withMethod('#class/' + c, m === undefined ? method : m); }
  function neuronHref(key, m) { return withMethod('#neuron/' + key, m === undefined ? method : m); }
  function methodPicker(hrefOf) {
    if (graphMethods.length < 2) return null;
    var select = el('select', {id: 'method-select', title: 'the method whose paths this view shows'});
    graphMethods.forEach(function (m) {
      var option = el('option', {value: m, text: m});
      if (m === method) option.selected = true;
      select.appendChild(option);
    });
    select.addEventListener('change', function () { go(hrefOf(select.value)); });
    return el('label', {class: 'method-picker'}, 'Paths of ', select);
  }

  // A table whose headers show name, unit and meaning; a click on a header sorts by it.
  function sortableTable(keys, rows, id, legend) {
    var table = el('table', {class: 'sortable', id: id || ''});
    var head = el('tr');
    var body = el('tbody');
    var order = {key: null, dir: 1};
    keys.forEach(function (key) {
      var c = column(key);
      var th = el('th', {title: c[2] || c[0], 'data-key': key},
                  el('span', {class: 'h', text: c[0]}), c[1] ? el('span', {class: 'unit', text: c[1]}) : null);
      th.addEventListener('click', function () {
        order.dir = order.key === key ? -order.dir : (key === 'method' ? 1 : -1);
        order.key = key;
        rows.sort(function (a, b) {
          var x = own(a, key), y = own(b, key);
          if (x === y) return 0;
          if (x === null || x === undefined) return 1;
          if (y === null || y === undefined) return -1;
          return (x < y ? -1 : 1) * order.dir;
        });
        fill();
        Array.prototype.forEach.call(head.children, function (h) { h.removeAttribute('data-sorted'); });
        th.setAttribute('data-sorted', order.dir > 0 ? 'asc' : 'desc');
      });
      head.appendChild(th);
    });
    function fill() {
      clear(body);
      rows.forEach(function (row) {
        body.appendChild(el.apply(null, ['tr', {}].concat(keys.map(function (key) {
          return el('td', {text: num(own(row, key), column(key)[1])});
        }))));
      });
    }
    fill();
    table.appendChild(el('thead', {}, head));
    table.appendChild(body);
    if (!legend) return table;
    var dl = el('dl', {class: 'legend'});
    keys.forEach(function (key) {
      var c = column(key);
      if (c[2]) { dl.appendChild(el('dt', {text: c[0]})); dl.appendChild(el('dd', {text: c[2]})); }
    });
    return el('div', {class: 'table-box'}, table, dl);
  }

  // ------------------------------------------------------------------ overview
  function renderOverview() {
    var root = clear($('#view-overview'));
    var m = D.meta;
    root.appendChild(el('p', {class: 'lead'},
      m.records.toLocaleString() + ' paths of ' + m.images.toLocaleString() + ' images in ' +
      m.classes.toLocaleString() + ' classes; ' + m.layers + ' layers, ' + m.k + (hasHeads ? ' unit(s)' : ' neuron(s)') + ' per layer; methods: ' +
      m.methods.join(', ') + '. The class and neuron views show one method at a time (' + primary +
      (graphMethods.length > 1 ? ' first; ' + graphMethods.slice(1).join(', ') + ' from their menu' : '') + ').'));
    if (D.claims.length) {
      root.appendChild(el('h2', {text: 'What the run shows'}));
      root.appendChild(el.apply(null, ['ul', {id: 'claims'}].concat(D.claims.map(function (t) {
        return el('li', {text: t}); }))));
    }
    root.appendChild(el('h2', {text: 'Methods'}));
    var keys = ['method'].concat(Object.keys(D.overview[0] || {}).filter(function (k) { return k !== 'method'; }));
    root.appendChild(sortableTable(keys, D.overview.slice(), 'methods-table', true));
    root.appendChild(el('p', {class: 'hint', text: 'Click a header to sort. JAS: joint attribution score.'}));
    root.appendChild(el('h2', {text: 'Distributions'}));
    var row = el('div', {class: 'row'});
    var jasDiv = el('div', {id: 'jas-plot', class: 'plot'});
    var effDiv = el('div', {id: 'effect-plot', class: 'plot'});
    row.appendChild(jasDiv);
    row.appendChild(effDiv);
    root.appendChild(row);
    var faithRow = null;
    if (D.faithfulness.length) {
      root.appendChild(el('h2', {text: 'Faithfulness against sparsity'}));
      root.appendChild(el('p', {class: 'hint', text: 'Per class, the units its paths use most are kept (N per ' +
        'layer) and every other unit is ablated; mean target probability on held-out images of the class, ' +
        'classes averaged. Dashed: a random ranking (the control); dotted: the unablated model.'}));
      faithRow = el('div', {class: 'row', id: 'faithfulness'});
      root.appendChild(faithRow);
    }
    if (m.notes.length) {
      root.appendChild(el('h2', {text: 'What this page holds'}));
      root.appendChild(el.apply(null, ['ul', {id: 'notes'}].concat(m.notes.map(function (t) {
        return el('li', {text: t}); }))));
    }
    var settings = Object.keys(m.settings).filter(function (k) { return !/sha256|fingerprint|^schema$/.test(k); })
      .map(function (k) { return k + ' = ' + m.settings[k]; }).join(', ');
    root.appendChild(el('p', {class: 'hint', text: 'Run settings: ' + settings}));
    var done = [];
    done.push(Plotly.newPlot(jasDiv, m.methods.filter(function (k) { return own(D.jas, k); }).map(function (k) {
      return {type: 'box', name: plain(k), y: own(D.jas, k), boxpoints: false};
    }), {title: {text: 'JAS per image (probability)'}, showlegend: false, margin: {t: 40, b: 80}, height: 360},
    PLOT));
    var effects = ['remove', 'enhance'].map(function (op) {
      var x = [], y = [];
      m.methods.forEach(function (k) {
        (own(own(D.effects, k), op) || []).forEach(function (v) { x.push(plain(k)); y.push(100 * v); });
      });
      return {type: 'box', name: op === 'remove' ? 'removed' : 'amplified', x: x, y: y, boxpoints: false,
              marker: {color: op === 'remove' ? '#c0392b' : '#2471a3'}};
    }).filter(function (t) { return t.y.length; });
    if (effects.length) {
      done.push(Plotly.newPlot(effDiv, effects, {
        title: {text: 'Change of p(y) when the path is removed / amplified (%)'}, boxmode: 'group',
        margin: {t: 40, b: 80}, height: 360}, PLOT));
    } else {
      effDiv.appendChild(el('p', {class: 'hint', text: 'No evaluation yet: run captum-paths evaluate.'}));
    }
    if (faithRow) {
      var ablations = [];
      D.faithfulness.forEach(function (r) { if (ablations.indexOf(r.ablation) < 0) ablations.push(r.ablation); });
      var divs = ablations.map(function (ab) {  // every panel placed before any is drawn, so each gets its width
        return faithRow.appendChild(el('div', {class: 'plot', 'data-ablation': ab}));
      });
      ablations.forEach(function (ab, a) {
        var div = divs[a];
        var rows = D.faithfulness.filter(function (r) { return r.ablation === ab; });
        var names = [];
        rows.forEach(function (r) { if (names.indexOf(r.method) < 0) names.push(r.method); });
        var traces = names.map(function (name) {
          var line = rows.filter(function (r) { return r.method === name; });
          return {type: 'scatter', mode: 'lines+markers', name: plain(name),
                  x: line.map(function (r) { return String(r.n); }),
                  y: line.map(function (r) { return r.mean_prob; }),
                  line: {dash: name === 'random ranking' ? 'dash' : 'solid', width: name === primary ? 3 : 1.5},
                  hovertemplate: 'N = %{x} per layer: p(y) %{y:.3f}<extra>' + plain(name) + '</extra>'};
        });
        var full = rows.length ? rows[0].mean_prob_full : null;
        done.push(Plotly.newPlot(div, traces, {
          title: {text: 'every other unit ' + (ab === 'zero' ? 'set to 0' : 'set to its mean')}, height: 360,
          margin: {t: 40, b: 60}, xaxis: {title: {text: 'units kept per layer (N)'}, type: 'category'},
          yaxis: {title: {text: 'mean p(y)'}, rangemode: 'tozero'},
          shapes: full === null ? [] : [{type: 'line', xref: 'paper', x0: 0, x1: 1, y0: full, y1: full,
                                         line: {dash: 'dot', color: '#888'}}]}, PLOT));
      });
    }
    Promise.all(done).then(function () { document.body.setAttribute('data-ready', 'overview'); });
  }

  // ------------------------------------------------------------------ class
  function sharedNeurons(a, b) {
    var mine = Object.create(null);
    D.graphs[method][a].nodes.forEach(function (n) { mine[nodeKey(n[0], n[1])] = true; });
    return D.graphs[method][b].nodes.filter(function (n) { return mine[nodeKey(n[0], n[1])]; })
      .map(function (n) { return nodeKey(n[0], n[1]); });
  }

  function renderClass(c) {
    var root = clear($('#class-body'));
    var g = D.graphs[method][c];
    $('#class-search').value = className(c);
    root.setAttribute('data-class', String(c));
    root.setAttribute('data-method', method);
    root.appendChild(el('h2', {text: 'Class ' + className(c)}));
    var picker = methodPicker(function (m) { return classHref(c, m); });
    if (picker) root.appendChild(picker);
    // causal edges (the analysis measured them for this method): a checkbox shows or hides them
    var causal = g.causal || [];
    var measured = g.causal !== undefined, drawCausal = measured && showCausal && causal.length > 0;
    if (measured) {
      var box = el('input', {type: 'checkbox', id: 'class-causal-toggle'});
      box.checked = showCausal;
      box.addEventListener('change', function () { showCausal = box.checked; renderClass(c); });
      root.appendChild(el('label', {class: 'method-picker', title: 'draw how strongly each path unit drives the ' +
        'path\'s unit of the next layer (measured by removing it)'}, box, ' causal edges'));
    }
    root.appendChild(el('p', {}, D.classes.sizes[c] + ' images; paths of ' + method + '. Nodes: neurons (layer, index) sized by how many of ' +
      'the class\'s paths use them, coloured by their mean contribution; grey lines: neurons used together; ' +
      (drawCausal ? 'red and blue lines: causal edges (see below); ' : '') +
      'orange: the consensus path. Click a neuron to open it.'));
    var plot = el('div', {id: 'class-graph', class: 'plot wide'});
    root.appendChild(plot);
    var byLayer = Object.create(null);
    g.nodes.forEach(function (n, i) { (byLayer[n[0]] = byLayer[n[0]] || []).push(i); });
    var pos = g.nodes.map(function () { return [0, 0]; });
    Object.keys(byLayer).forEach(function (layer) {
      byLayer[layer].forEach(function (i, r) { pos[i] = [Number(layer), -r]; });
    });
    var maxCount = Math.max.apply(null, g.nodes.map(function (n) { return n[2]; }).concat([1]));
    var maxEdge = Math.max.apply(null, g.edges.map(function (e) { return e[2]; }).concat([1]));
    var traces = [];
    [[0, 0.34, 1], [0.34, 0.67, 2.5], [0.67, 1.01, 4.5]].forEach(function (bucket) {
      var x = [], y = [];
      g.edges.forEach(function (e) {
        var f = e[2] / maxEdge;
        if (f < bucket[0] || f >= bucket[1]) return;
        x.push(pos[e[0]][0], pos[e[1]][0], null);
        y.push(pos[e[0]][1], pos[e[1]][1], null);
      });
      if (x.length) traces.push({type: 'scatter', mode: 'lines', x: x, y: y, hoverinfo: 'skip', showlegend: false,
                                 line: {color: 'rgba(120,120,120,0.45)', width: bucket[2]}});
    });
    var drawn = 0;
    if (drawCausal) {  // colour: sign of the mean normalised effect; width: its size; dotted: mostly below the floor
      var maxEffect = Math.max.apply(null, causal.map(function (e) { return Math.abs(e[2] || 0); }).concat([1e-12]));
      var groups = Object.create(null), mx = [], my = [], tips = [];
      causal.forEach(function (e) {
        if (e[2] === null || e[2] === undefined) return;
        var f = Math.abs(e[2]) / maxEffect;
        var width = f < 0.34 ? 1.5 : f < 0.67 ? 3.5 : 6;
        var up = e[2] >= 0, solid = e[3] !== null && e[3] >= 0.5;
        var key = (up ? 'up' : 'down') + width + (solid ? 'solid' : 'dot');
        var t = groups[key] || (groups[key] = {x: [], y: [], up: up, width: width, solid: solid});
        t.x.push(pos[e[0]][0], pos[e[1]][0], null);
        t.y.push(pos[e[0]][1], pos[e[1]][1], null);
        mx.push((pos[e[0]][0] + pos[e[1]][0]) / 2);
        my.push((pos[e[0]][1] + pos[e[1]][1]) / 2);
        var a = g.nodes[e[0]], b = g.nodes[e[1]];
        tips.push(layerLabel(a[0]) + ' ' + unitName(a[0]) + ' ' + a[1] + ' \u2192 ' + layerLabel(b[0]) + ' ' +
                  unitName(b[0]) + ' ' + b[1] + '<br>mean normalised effect ' + num(e[2]) + '<br>' +
                  (e[3] === null ? '–' : Math.round(100 * e[3])) + '% of ' + e[4] + ' image(s) above the noise floor');
        drawn++;
      });
      Object.keys(groups).forEach(function (k) {
        var t = groups[k];
        traces.push({type: 'scatter', mode: 'lines', x: t.x, y: t.y, hoverinfo: 'skip', showlegend: false,
                     name: 'causal', line: {color: t.up ? 'rgba(192,57,43,0.85)' : 'rgba(36,113,163,0.85)',
                                            width: t.width, dash: t.solid ? 'solid' : 'dot'}});
      });
      traces.push({type: 'scatter', mode: 'markers', x: mx, y: my, hovertext: tips, hoverinfo: 'text',
                   showlegend: false, name: 'causal effects', marker: {size: 9, color: 'rgba(0,0,0,0)'}});
    }
    root.setAttribute('data-causal', String(drawn));
    var where = Object.create(null);
    g.nodes.forEach(function (n, i) { where[nodeKey(n[0], n[1])] = i; });
    var cx = [], cy = [];
    g.consensus.forEach(function (n) {
      var i = where[nodeKey(n[0], n[1])];
      if (i !== undefined) { cx.push(pos[i][0]); cy.push(pos[i][1]); }
    });
    if (cx.length) traces.push({type: 'scatter', mode: 'lines', x: cx, y: cy, hoverinfo: 'skip', name: 'consensus',
                                line: {color: '#e67e22', width: 3}});
    var contrib = g.nodes.map(function (n) { return n[3] === null ? 0 : n[3]; });
    var span = Math.max.apply(null, contrib.map(Math.abs).concat([1e-12]));
    // nodes inside the class's learned circuit (the circuits stage studied it): a thick black ring
    var circuit = (D.circuits || [])[c] || null;
    var ringed = Object.create(null);
    ((circuit && own(circuit.nodes_inside, method)) || []).forEach(function (i) { ringed[i] = true; });
    traces.push({
      type: 'scatter', mode: 'markers+text', name: 'neurons',
      x: g.nodes.map(function (n, i) { return pos[i][0]; }), y: g.nodes.map(function (n, i) { return pos[i][1]; }),
      text: g.nodes.map(function (n) { return String(n[1]); }), textposition: 'middle right',
      textfont: {size: 9},
      customdata: g.nodes.map(function (n) { return nodeKey(n[0], n[1]); }),
      hovertext: g.nodes.map(function (n) {
        return layerLabel(n[0]) + ', ' + unitName(n[0]) + ' ' + n[1] + '<br>' + n[2] + ' of ' + D.classes.sizes[c] +
          ' paths<br>mean contribution ' + num(n[3]);
      }),
      hoverinfo: 'text',
      marker: {size: g.nodes.map(function (n) { return 8 + 22 * Math.sqrt(n[2] / maxCount); }), color: contrib,
               colorscale: 'RdBu', cmin: -span, cmax: span,
               line: {width: g.nodes.map(function (n, i) { return ringed[i] ? 3.5 : 1; }),
                      color: g.nodes.map(function (n, i) { return ringed[i] ? '#000' : '#333'; })},
               colorbar: {title: {text: 'mean<br>contribution'}, thickness: 12}}
    });
    Plotly.newPlot(plot, traces, {
      height: 420, margin: {t: 20, l: 40, r: 20, b: 40}, hovermode: 'closest', showlegend: false,
      xaxis: layerAxis, yaxis: {visible: false}
    }, PLOT).then(function () {
      plot.on('plotly_click', function (ev) {
        var p = ev.points.filter(function (q) { return q.customdata; })[0];
        if (p) go(neuronHref(p.customdata));
      });
      root.setAttribute('data-drawn', String(g.nodes.length));
    });

    // the nodes as a list too (keyboard and screen readers)
    var list = el('div', {class: 'nodes', id: 'class-nodes'});
    Object.keys(byLayer).forEach(function (layer) {
      var line = el('div', {}, el('span', {class: 'lab', text: layerLabel(Number(layer)) + ': '}));
      byLayer[layer].forEach(function (i) {
        var n = g.nodes[i];
        line.appendChild(el('a', {href: neuronHref(nodeKey(n[0], n[1])), class: 'chip', 'data-node': nodeKey(n[0], n[1]),
                                  text: n[1] + ' (' + n[2] + ')'}));
      });
      list.appendChild(line);
    });
    root.appendChild(el('details', {}, el('summary', {text: 'Neurons of the graph, per layer (paths using each)'}),
                        list));
    if (measured) renderCausal(root, g, causal, drawCausal);
    if (circuit) renderCircuit(root, circuit);

    root.appendChild(el('h3', {text: 'Consensus path'}));
    root.appendChild(el.apply(null, ['p', {id: 'class-consensus'}].concat(g.consensus.map(function (n) {
      return el('a', {href: neuronHref(nodeKey(n[0], n[1])), class: 'chip',
                      text: 'L' + n[0] + ' · ' + n[1] + ' (' + Math.round(100 * n[2]) + '%)',
                      title: 'support: share of the class\'s paths holding it'});
    }))));
    root.appendChild(el('h3', {text: 'Nearest classes'}));
    var near = el('table', {class: 'plain', id: 'class-nearest'},
                  el('tr', {}, el('th', {text: 'class'}), el('th', {text: 'cosine similarity'}),
                     el('th', {text: 'neurons it shares with this class'})));
    ((own(D.nearest, method) || [])[c] || []).forEach(function (pair) {
      var shared = sharedNeurons(c, pair[0]);
      var cell = el('td');
      shared.forEach(function (k) { cell.appendChild(el('a', {href: neuronHref(k), class: 'chip', text: k})); });
      if (!shared.length) cell.textContent = 'none among the drawn neurons';
      near.appendChild(el('tr', {}, el('td', {}, el('a', {href: classHref(pair[0]), text: className(pair[0])})),
                          el('td', {text: num(pair[1])}), cell));
    });
    root.appendChild(near);
  }

  // The class's learned circuit: its size and faithfulness, units kept per layer, and the causal edges
  // between its strongest units.
  function renderCircuit(root, cc) {
    var info = D.meta.circuits || {};
    var ck = info.kinds || [];
    function pct(v) { return (v === null || v === undefined) ? '–' : (Math.round(1000 * v) / 10) + '%'; }
    var seen = {};
    var short = ck.map(function (kind) {
      seen[kind] = (seen[kind] || 0) + 1;
      return (kind === 'head' ? 'heads ' : 'FFN ') + (seen[kind] - 1);
    });
    function unitLabel(l, u) { return (short[l] || ('layer ' + l)) + (ck[l] === 'head' ? ', head ' : ', neuron ') + u; }
    root.appendChild(el('h3', {text: 'Class circuit'}));
    var kept = cc.mean_prob === null || !cc.mean_prob_full ? null : cc.mean_prob / cc.mean_prob_full;
    var inside = own(cc.inside, method) ? cc.inside[method] : null;
    root.appendChild(el('p', {id: 'class-circuit-summary', text: 'A learned circuit (sparsity strength \u03bb = ' +
      cc.strength + '): ' + cc.units_kept.toLocaleString() + ' of ' + cc.total_units.toLocaleString() + ' units (' +
      pct(cc.units_kept / cc.total_units) + ', ' + cc.heads + ' of them heads), every other unit ' +
      (info.ablation === 'zero' ? 'set to 0' : 'set to its mean') + ' at every token' + (kept === null ? '.' :
      '; it keeps ' + pct(kept) + ' of the unablated target probability on ' + cc.held_out + ' held-out images.') +
      (inside ? ' ' + pct(inside[0]) + ' of the ' + inside[2] + ' path units of ' + method + ' lie inside it (a ' +
      'random unit of those layers: ' + pct(inside[1]) + '); they have black rings in the graph above.' : '')}));
    var bars = el('div', {id: 'class-circuit-layers', class: 'plot wide'});
    root.appendChild(bars);
    var layers = cc.kept_per_layer.map(function (v, l) { return l; });
    var traces = ['head', 'neuron'].map(function (kind) {
      var mine = layers.filter(function (l) { return (ck[l] || 'neuron') === kind; });
      return {type: 'bar', name: kind === 'head' ? 'heads' : 'FFN neurons', x: mine.map(function (l) { return short[l] || String(l); }),
              y: mine.map(function (l) { return cc.kept_per_layer[l] / cc.widths[l]; }),
              hovertext: mine.map(function (l) { return cc.kept_per_layer[l] + ' of ' + cc.widths[l]; }),
              hoverinfo: 'text+x', marker: {color: kind === 'head' ? '#8e44ad' : '#16a085'}};
    }).filter(function (t) { return t.x.length; });
    Plotly.newPlot(bars, traces, {height: 260, margin: {t: 30, l: 50, r: 20, b: 60}, title: {text: 'share of each layer\'s units in the circuit', font: {size: 13}},
                                  yaxis: {tickformat: '.0%'}, xaxis: {type: 'category', categoryorder: 'array',
                                  categoryarray: layers.map(function (l) { return short[l] || String(l); })}}, PLOT);
    root.setAttribute('data-circuit-units', String(cc.units_kept));
    root.setAttribute('data-circuit-edges', String(cc.edges.length));
    if (!cc.units.length) return;
    root.appendChild(el('p', {class: 'hint', id: 'class-circuit-legend', text: 'Below: the ' +
      (info.edge_units || '') + ' strongest units of each layer of the circuit (largest gate logits) and the causal ' +
      'edges between consecutive ones, measured on the class\'s images by replacing the source by its baseline: ' +
      'red, the source raises the target; blue, it lowers it; wider, a larger mean normalised effect; solid, most ' +
      'images above the noise floor (95% of random unit pairs of the same layers).'}));
    var graph = el('div', {id: 'class-circuit-graph', class: 'plot wide'});
    root.appendChild(graph);
    var rank = {}, pos = cc.units.map(function (u) {
      rank[u[0]] = (rank[u[0]] || 0) + 1;
      return [u[0], -(rank[u[0]] - 1)];
    });
    var maxEffect = Math.max.apply(null, cc.edges.map(function (e) { return Math.abs(e[2] || 0); }).concat([1e-12]));
    var lines = [], mx = [], my = [], tips = [];
    cc.edges.forEach(function (e) {
      if (e[2] === null) return;
      var f = Math.abs(e[2]) / maxEffect;
      lines.push({type: 'scatter', mode: 'lines', x: [pos[e[0]][0], pos[e[1]][0]], y: [pos[e[0]][1], pos[e[1]][1]],
                  hoverinfo: 'skip', showlegend: false,
                  line: {color: e[2] >= 0 ? 'rgba(192,57,43,0.8)' : 'rgba(36,113,163,0.8)', width: 1 + 5 * f,
                         dash: e[3] !== null && e[3] >= 0.5 ? 'solid' : 'dot'}});
      mx.push((pos[e[0]][0] + pos[e[1]][0]) / 2);
      my.push((pos[e[0]][1] + pos[e[1]][1]) / 2);
      tips.push(unitLabel(cc.units[e[0]][0], cc.units[e[0]][1]) + ' \u2192 ' + unitLabel(cc.units[e[1]][0], cc.units[e[1]][1]) +
                '<br>mean normalised effect ' + num(e[2]) + '<br>' + (e[3] === null ? '–' : Math.round(100 * e[3])) +
                '% of ' + e[4] + ' image(s) above the noise floor');
    });
    lines.push({type: 'scatter', mode: 'markers', x: mx, y: my, hovertext: tips, hoverinfo: 'text', showlegend: false,
                marker: {size: 9, color: 'rgba(0,0,0,0)'}});
    lines.push({type: 'scatter', mode: 'markers+text', showlegend: false, x: pos.map(function (p) { return p[0]; }),
                y: pos.map(function (p) { return p[1]; }), text: cc.units.map(function (u) { return String(u[1]); }),
                textposition: 'middle right', textfont: {size: 9},
                hovertext: cc.units.map(function (u) { return unitLabel(u[0], u[1]) + '<br>gate logit ' + num(u[2]); }),
                hoverinfo: 'text', marker: {size: 12, color: cc.units.map(function (u) { return (ck[u[0]] || 'neuron') === 'head' ? '#8e44ad' : '#16a085'; }),
                                            line: {width: 1, color: '#333'}}});
    Plotly.newPlot(graph, lines, {height: 300, margin: {t: 20, l: 40, r: 20, b: 60}, hovermode: 'closest', showlegend: false,
                                  xaxis: {tickvals: layers, ticktext: layers.map(function (l) { return short[l] || String(l); }), zeroline: false},
                                  yaxis: {visible: false}}, PLOT);
  }

  // The causal edges of a class graph: a legend and the table of the measured edges.
  function renderCausal(root, g, causal, drawn) {
    var info = D.meta.causal || {};
    root.appendChild(el('h3', {text: 'Causal edges'}));
    root.appendChild(el('p', {class: 'hint', id: 'class-causal-legend', text: 'Each path unit was replaced by its ' +
      'baseline (' + (info.ablation || 'the run\'s') + ' ablation) and the path\'s unit of the next layer read ' +
      'again, on ' + (info.images === undefined ? 'a draw of' : info.images) + ' images of the run. Mean ' +
      'normalised effect: the change, in standard deviations of the target unit, averaged over the class\'s ' +
      'images. ' + (drawn ? 'In the graph: red, the source raises the target (removing it lowers the target); ' +
      'blue, it lowers it; wider: a larger effect; solid: most of the images above the noise floor (95% of random ' +
      'unit pairs of the same layers), dotted: not. ' : '') +
      (typeof info.share_above_floor !== 'number' || typeof info.random_share_above_floor !== 'number' ? '' :
        'Over the run: ' + Math.round(100 * info.share_above_floor) + '% of path edges above the floor, against ' +
        Math.round(100 * info.random_share_above_floor) + '% of random pairs.')}));
    if (!causal.length) {
      root.appendChild(el('p', {class: 'hint', id: 'class-causal-none', text: 'No causal edge of this class ' +
        'among the edges drawn (its images were not among those measured).'}));
      return;
    }
    var rows = causal.map(function (e) {
      var a = g.nodes[e[0]], b = g.nodes[e[1]];
      return {edge: nodeKey(a[0], a[1]) + ' \u2192 ' + nodeKey(b[0], b[1]), causal_effect: e[2],
              share_above_floor: e[3], causal_images: e[4]};
    });
    rows.sort(function (x, y) { return Math.abs(y.causal_effect || 0) - Math.abs(x.causal_effect || 0); });
    root.appendChild(el('details', {open: !drawn}, el('summary', {text: 'The ' + rows.length + ' causal edges ' +
      'of the graph, largest effect first'}), sortableTable(['edge', 'causal_effect', 'share_above_floor',
                                                             'causal_images'], rows, 'class-causal-edges', true)));
  }

  // ------------------------------------------------------------------ neuron
  function imagesUsing(layer, neuron) {
    var paths = own(D.images.paths, method) || [];
    var out = [];
    paths.forEach(function (p, i) { if (p && p[layer] && p[layer].indexOf(neuron) >= 0) out.push(i); });
    return out;
  }

  function thumb(i, big) {
    var src = D.images.thumbs.length ? D.images.thumbs[i] : null;
    var label = D.images.ids[i];
    var a = el('a', {href: '#image/' + i, class: 'thumb', title: label + ' (' + className(D.images['class'][i]) + ')',
                     'data-image-id': label});
    if (src) a.appendChild(el('img', {src: src, alt: label, class: big ? 'big' : ''}));
    else a.appendChild(el('span', {text: label}));
    return a;
  }

  function renderNeuron(asked) {
    var root = clear($('#neuron-body'));
    var parts = /^(\d+):(\d+)$/.exec(asked);
    var layer = parts ? Number(parts[1]) : NaN, neuron = parts ? Number(parts[2]) : NaN;
    root.setAttribute('data-method', method);
    if (!(layer < D.meta.layers)) {  // not LAYER:INDEX of this page's layers
      root.setAttribute('data-neuron', '');
      root.appendChild(el('h2', {text: 'No such neuron'}));
      root.appendChild(el('p', {class: 'hint', id: 'neuron-missing', text: 'The address names no neuron of this ' +
        'page ("' + asked + '"): a neuron\'s address is #neuron/LAYER:INDEX with a layer from 0 to ' +
        (D.meta.layers - 1) + ', e.g. #neuron/0:0.'}));
      return;
    }
    var key = nodeKey(layer, neuron);
    var info = own(own(D.neurons, method), key);
    root.setAttribute('data-neuron', key);
    var block = mixed ? Math.floor(layer / 2) : layer;
    root.appendChild(el('h2', {text: !hasHeads ? 'Neuron ' + neuron + ' of layer ' + layer :
      kinds[layer] === 'head' ? 'Head ' + neuron + ' of block ' + block :
      'Neuron ' + neuron + ' of block ' + block + '\'s FFN'}));
    var picker = methodPicker(function (m) { return neuronHref(key, m); });
    if (picker) root.appendChild(picker);
    if (!info) {
      root.appendChild(el('p', {text: 'No path of ' + method + ' in this page uses this neuron.'}));
      return;
    }
    root.appendChild(el('p', {id: 'neuron-stats'}, 'Used by ' + info.paths.toLocaleString() + ' paths of ' + method +
      ' in ' + info.classes + ' classes; mean contribution ' + num(info.mean) + ' (probability).'));
    var freq = [];
    D.graphs[method].forEach(function (g, c) {
      g.nodes.forEach(function (n) {
        if (n[0] === layer && n[1] === neuron) freq.push([c, n[2] / D.classes.sizes[c], n[2], n[3]]);
      });
    });
    freq.sort(function (a, b) { return b[1] - a[1] || b[2] - a[2]; });
    var shown = freq.slice(0, 40);
    var plot = el('div', {id: 'neuron-classes', class: 'plot wide'});
    root.appendChild(plot);
    Plotly.newPlot(plot, [{
      type: 'bar', x: shown.map(function (f) { return plain(className(f[0])); }),
      y: shown.map(function (f) { return f[1]; }),
      customdata: shown.map(function (f) { return f[0]; }),
      marker: {color: shown.map(function (f) { return f[3] === null ? 0 : f[3]; }), colorscale: 'RdBu',
               cmid: 0, colorbar: {title: {text: 'mean<br>contribution'}, thickness: 12}},
      hovertext: shown.map(function (f) { return f[2] + ' of ' + D.classes.sizes[f[0]] + ' paths; mean contribution ' +
                                                 num(f[3]); }), hoverinfo: 'x+text'
    }], {height: 300, margin: {t: 30, b: 90}, title: {text: 'Share of each class\'s paths that use it' +
      (freq.length > shown.length ? ' (top ' + shown.length + ' of ' + freq.length + ' classes)' : '')},
      xaxis: {type: 'category'}, yaxis: {title: {text: 'fraction of paths'}, rangemode: 'tozero'}}, PLOT
    ).then(function () {
      plot.on('plotly_click', function (ev) { go(classHref(ev.points[0].customdata)); });
    });
    if (freq.length < info.classes) {
      root.appendChild(el('p', {class: 'hint', text: (info.classes - freq.length) + ' more classes use it too, ' +
        'but not among the neurons their graphs draw.'}));
    }
    var users = imagesUsing(layer, neuron);
    root.appendChild(el('h3', {text: 'Images whose path uses it (' + users.length + ' in this page)'}));
    var grid = el('div', {class: 'thumbs', id: 'neuron-images'});
    users.slice(0, 120).forEach(function (i) { grid.appendChild(thumb(i)); });
    root.appendChild(grid);
    if (users.length > 120) root.appendChild(el('p', {class: 'hint', text: 'The first 120 are shown.'}));
    var heatmaps = own(D.heat, key);
    if (!(heatmaps && heatmaps.length)) {
      var computed = Object.keys(D.heat).length;
      root.appendChild(el('p', {class: 'hint', id: 'neuron-no-heatmap', text: computed ?
        'Pixel attributions were computed for the ' + computed + ' most used neurons only ' +
        '(captum-paths report --heatmaps N for more).' :
        'No pixel attributions: the run\'s model or images were not at hand when the page was written.'}));
    }
    if (heatmaps && heatmaps.length) {
      root.appendChild(el('h3', {text: 'What drives it: pixel attribution (red raises the neuron, blue lowers it)'}));
      var heat = el('div', {class: 'thumbs', id: 'neuron-heatmaps'});
      heatmaps.forEach(function (h) {
        heat.appendChild(el('figure', {}, thumb(h[0], true), el('img', {src: h[1], class: 'big', alt: 'attribution'}),
                            el('figcaption', {text: D.images.ids[h[0]]})));
      });
      root.appendChild(heat);
    }
  }

  // ------------------------------------------------------------------ image
  function renderImage(i) {
    var root = clear($('#image-body'));
    var id = D.images.ids[i], c = D.images['class'][i];
    root.setAttribute('data-image', id);
    $('#image-search').value = id;
    function consensusOf(m) {  // layer -> neurons of the class's consensus path of method m
      var out = Object.create(null);
      (own(D.graphs, m) ? D.graphs[m][c].consensus : []).forEach(function (n) {
        (out[n[0]] = out[n[0]] || []).push(n[1]);
      });
      return out;
    }
    var consensus = new Map();
    D.meta.methods.forEach(function (m) { consensus.set(m, consensusOf(m)); });
    var pred = D.images.prediction[i];
    root.appendChild(el('div', {class: 'row'}, thumb(i, true), el('div', {},
      el('h2', {text: id}),
      el('p', {}, 'Class ', el('a', {href: classHref(c, primary), text: className(c)}),
         pred === null || pred === undefined ? '' : '; predicted ' + (classIndex.has(String(pred)) ?
           className(classIndex.get(String(pred))) : String(pred)),
         D.images.p[i] === null ? '' : '; p(y) = ' + num(D.images.p[i]) + '.'))));
    var methods = D.meta.methods.filter(function (m) { return (own(D.images.paths, m) || [])[i]; });
    root.appendChild(el('h3', {text: 'Paths (neuron per layer; marked: not on the consensus path of the ' +
                                     'method\'s paths of this class)'}));
    var table = el('table', {class: 'plain', id: 'image-paths'});
    table.appendChild(el.apply(null, ['tr', {}, el('th', {text: 'layer'})].concat(methods.map(function (m) {
      return el('th', {text: m}); }))));
    for (var layer = 0; layer < D.meta.layers; layer++) {
      var tr = el('tr', {}, el('td', {text: hasHeads ? layerLabel(layer) : String(layer)}));
      methods.forEach(function (m) {
        var td = el('td');
        D.images.paths[m][i][layer].forEach(function (n) {
          var off = own(D.graphs, m) && !(consensus.get(m)[layer] || []).some(function (x) { return x === n; });
          td.appendChild(el('a', {href: neuronHref(nodeKey(layer, n), own(D.graphs, m) ? m : primary),
                                  class: 'chip' + (off ? ' off' : ''), text: String(n),
                                  title: off ? 'departs from the class consensus' : 'consensus'}));
        });
        tr.appendChild(td);
      });
      table.appendChild(tr);
    }
    root.appendChild(table);
    var off = [];
    ((own(D.images.paths, primary) || [])[i] || []).forEach(function (units, layer) {
      var mine = consensus.get(primary)[layer] || [];
      if (units.some(function (n) { return mine.indexOf(n) < 0; })) off.push(layer);
    });
    root.appendChild(el('p', {id: 'image-departures', text: off.length ?
      primary + ' departs from the class consensus at layer(s) ' + off.join(', ') + '.' :
      primary + ' follows the class consensus at every layer.'}));
    root.appendChild(el('h3', {text: 'Effects'}));
    var rows = methods.map(function (m) {
      var at = function (values) { return (own(values, m) || [])[i]; };
      return {method: m, jas: at(D.images.jas), remove: at(D.images.remove), enhance: at(D.images.enhance)};
    });
    D.columns.jas = ['JAS', 'probability', 'joint attribution score of this path'];
    D.columns.remove = ['Removal effect', '% of p(y)', 'change of the target probability when the path is zeroed'];
    D.columns.enhance = ['Enhancement effect', '% of p(y)',
                         'change of the target probability when the path is amplified'];
    root.appendChild(sortableTable(['method', 'jas', 'remove', 'enhance'], rows, 'image-effects', true));
    var plot = el('div', {id: 'image-contributions', class: 'plot wide'});
    root.appendChild(plot);
    var drawn = methods.filter(function (m) { return (own(D.images.contributions, m) || [])[i]; });
    Plotly.newPlot(plot, drawn.map(function (m) {
      var per = own(D.images.contributions, m)[i].map(function (units) {
        return units.reduce(function (s, v) { return s + (v || 0); }, 0);
      });
      return {type: 'bar', name: plain(m), x: per.map(function (v, l) { return l; }), y: per};
    }), {height: 320, barmode: 'group', margin: {t: 30}, title: {text: 'Contribution of each layer\'s path neurons'},
         xaxis: layerAxis, yaxis: {title: {text: 'probability'}}}, PLOT);
  }

  // ------------------------------------------------------------------ tables
  function renderTables() {
    var root = clear($('#view-tables'));
    if (!D.tables.length) root.appendChild(el('p', {text: 'No evaluation or analysis tables yet.'}));
    D.tables.forEach(function (t) {
      root.appendChild(el('h2', {text: t.title}));
      if (t.note) root.appendChild(el('p', {text: t.note}));
      var rows = t.rows.map(function (r) {
        var o = Object.create(null);
        t.columns.forEach(function (k, j) { o[k] = r[j]; });
        return o;
      });
      root.appendChild(sortableTable(t.columns, rows));
    });
  }

  // ------------------------------------------------------------------ routing
  var rendered = {};
  function show(view) {
    Array.prototype.forEach.call(document.querySelectorAll('main > section'), function (s) {
      s.hidden = s.id !== 'view-' + view;
    });
    Array.prototype.forEach.call(document.querySelectorAll('nav a'), function (a) {
      a.classList.toggle('active', a.getAttribute('data-view') === view);
    });
    document.body.setAttribute('data-view', view);
  }
  // A piece of the address, percent-decoded; as it is when it is no valid percent-encoding.
  function decoded(part) {
    try { return decodeURIComponent(part); } catch (e) { return part; }
  }
  // The class or image index a piece of the address names (none: 0), or -1 when it names none.
  function indexOf(part, n) {
    var i = part === undefined || part === '' ? 0 : Number(part);
    return Number.isInteger(i) && i >= 0 && i < n ? i : -1;
  }
  function notice(root, text) {
    root.insertBefore(el('p', {class: 'hint notice', text: text}), root.firstChild);
  }
  // Every address draws a view: a piece that names nothing in the page (a class, image, neuron or
  // method it does not hold, 'constructor', '__proto__', bad percent-encoding) gets a note and the
  // default; a view that fails anyway says so in place of a blank page.
  function route() {
    var parts = location.hash.replace(/^#/, '').split('/');
    var view = parts[0] || 'overview';
    var asked = parts[2] === undefined || parts[2] === '' ? primary : decoded(parts[2]);
    method = own(D.graphs, asked) ? asked : primary;
    var other = method === asked ? null : 'This page has no class and neuron views of a method "' + asked +
      '"; they show ' + primary + '.';
    var body = null;
    try {
      if (view === 'class') {
        var c = indexOf(parts[1], D.classes.labels.length);
        show('class');
        body = $('#class-body');
        renderClass(c < 0 ? 0 : c);
        $('#class-missing').hidden = c >= 0;
        if (c < 0) notice(body, 'This page has no class ' + decoded(parts[1]) + ' (classes are numbered 0 to ' +
                                (D.classes.labels.length - 1) + '); it shows class ' + className(0) + '.');
        if (other) notice(body, other);
      } else if (view === 'neuron') {
        show('neuron');
        body = $('#neuron-body');
        var known = own(D.neurons, method) || {};
        var top = Object.keys(known).sort(function (a, b) { return known[b].paths - known[a].paths; })[0];
        if (parts[1]) renderNeuron(decoded(parts[1]));
        else if (top) renderNeuron(top);
        else clear(body).appendChild(el('p', {class: 'hint', text: 'No neuron of ' + method + ' in this page.'}));
        if (other) notice(body, other);
      } else if (view === 'image') {
        var i = indexOf(parts[1], D.images.ids.length);
        show('image');
        body = $('#image-body');
        if (i >= 0) renderImage(i);
        else {
          clear(body).setAttribute('data-image', '');
          body.appendChild(el('p', {class: 'hint', id: 'image-missing', text: 'This page has no image ' +
            decoded(parts[1]) + ': images are numbered 0 to ' + (D.images.ids.length - 1) + '; type an image id ' +
            'above or open one from a neuron.'}));
        }
      } else if (view === 'tables') {
        show('tables');
        if (!rendered.tables) { renderTables(); rendered.tables = true; }
      } else {
        show('overview');
        if (!rendered.overview) { renderOverview(); rendered.overview = true; }
      }
    } catch (err) {  // a bug: said in the view (and on the console), never a blank page
      if (body) clear(body).appendChild(el('p', {class: 'hint', text: 'This view could not be drawn: ' + err}));
      console.error(err);
    }
  }

  function setUp() {
    $('#run-name').textContent = D.meta.run;
    var classList = $('#class-list');
    D.classes.labels.forEach(function (label, c) { classList.appendChild(el('option', {value: className(c)})); });
    var search = $('#class-search');
    function pickClass() {
      var text = search.value.trim();
      var c = classIndex.get(text);
      if (c === undefined) {
        var hit = D.classes.labels.map(function (l, k) { return k; }).filter(function (k) {
          return className(k) === text || className(k).toLowerCase().indexOf(text.toLowerCase()) >= 0;
        });
        c = hit.length ? hit[0] : undefined;
      }
      $('#class-missing').hidden = c !== undefined;
      if (c !== undefined) go(classHref(c));
    }
    search.addEventListener('change', pickClass);
    search.addEventListener('keydown', function (e) { if (e.key === 'Enter') pickClass(); });
    var imageList = $('#image-list');
    D.images.ids.forEach(function (id) { imageList.appendChild(el('option', {value: id})); });
    var imageSearch = $('#image-search');
    function pickImage() {
      var i = D.images.ids.indexOf(imageSearch.value.trim());
      if (i >= 0) go('#image/' + i);
    }
    imageSearch.addEventListener('change', pickImage);
    imageSearch.addEventListener('keydown', function (e) { if (e.key === 'Enter') pickImage(); });
    window.addEventListener('hashchange', route);
    route();
  }
  setUp();
})();
