// a3d report.html viewer: NiiVue (vendored beside this file) shows the CT and the candidates' label
// volume; this file decodes the embedded data, windows in HU, and wires the controls. The data
// (a3d.predict.viewer.viewer_data) is the JSON in <script id="a3d-viewer-data">.
(function () {
  "use strict";
  var body = document.body;
  var data = JSON.parse(document.getElementById("a3d-viewer-data").textContent);
  var nx = data.shape[0], ny = data.shape[1], nz = data.shape[2];
  var nv = null, ct = null, masks = null, lines = null;
  var win = { width: data.window[0], level: data.window[1] };
  var minScore = data.score_threshold;

  function bytes(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // the CT's JPEG slices -> one NIfTI (header from the page) in memory. Each slice's mean is checked
  // against the writer's decoder: decoders may round a pixel's code differently by one, a damaged or
  // misplaced slice moves it by far more
  async function decodeCT() {
    var header = bytes(data.ct.header), n = nx * ny;
    var buf = new Uint8Array(header.length + n * nz);
    buf.set(header, 0);
    var canvas = new OffscreenCanvas(nx, ny);
    var ctx = canvas.getContext("2d", { willReadFrequently: true });
    for (var z = 0; z < nz; z++) {
      var blob = new Blob([bytes(data.ct.slices[z])], { type: "image/jpeg" });
      var bmp = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
      if (bmp.width !== nx || bmp.height !== ny) throw new Error("the CT decoded wrongly (slice " + z + " is " + bmp.width + " x " + bmp.height + ")");
      ctx.drawImage(bmp, 0, 0);
      bmp.close();
      var px = ctx.getImageData(0, 0, nx, ny).data, off = header.length + z * n, s = 0;
      for (var i = 0; i < n; i++) { buf[off + i] = px[4 * i]; s += px[4 * i]; }
      if (Math.abs(s - data.ct.sums[z]) > 0.25 * n) throw new Error("the CT decoded wrongly (slice " + z + ": mean code " + (s / n).toFixed(1) + ", expected " + (data.ct.sums[z] / n).toFixed(1) + ")");
    }
    return buf.buffer;
  }

  // grey colour map of the 256 codes for the window: exact in HU whatever the code's step
  function greyMap() {
    var lo = win.level - win.width / 2, m = { R: [], G: [], B: [], A: [], I: [] };
    for (var i = 0; i < 256; i++) {
      var g = Math.round(255 * Math.min(1, Math.max(0, (data.code_hu[i] - lo) / win.width)));
      m.R.push(g); m.G.push(g); m.B.push(g); m.A.push(255); m.I.push(i);
    }
    return m;
  }

  function visible(c) { return c.score >= minScore; }

  // colour tables of the label volumes: masks c; lines c (boxes) and N + c (axes, lighter); hidden: alpha 0
  function labelMap(parts) {
    var n = data.n_candidates, m = { R: [0], G: [0], B: [0], A: [0], I: [0] };
    for (var part = 0; part < parts; part++) {
      data.candidates.forEach(function (c) {
        var rgb = part === 1 ? c.rgb.map(function (v) { return Math.round(v + 0.6 * (255 - v)); }) : c.rgb;
        m.R.push(rgb[0]); m.G.push(rgb[1]); m.B.push(rgb[2]); m.I.push(part * n + c.id);
        m.A.push(visible(c) ? 255 : 0);
      });
    }
    return m;
  }

  // refresh: false before the volumes are added (adding them draws them); each refresh redraws every layer
  function applyWindow(refresh) {
    nv.addColormap("a3d-window", greyMap());
    ct.colormap = "a3d-window";
    ct.cal_min = 0;
    ct.cal_max = 255;
    if (refresh !== false) nv.updateGLVolume();
    document.getElementById("window-value").textContent = "W " + Math.round(win.width) + " / L " + Math.round(win.level);
    body.setAttribute("data-window", Math.round(win.width) + "," + Math.round(win.level));
    document.querySelectorAll("button.preset").forEach(function (b) {
      var w = data.windows[b.dataset.preset];
      b.classList.toggle("active", w[0] === win.width && w[1] === win.level);
    });
  }

  function applyScore(refresh) {
    masks.setColormapLabel(labelMap(1));
    lines.setColormapLabel(labelMap(2));
    if (refresh !== false) nv.updateGLVolume();
    var shown = 0;
    document.querySelectorAll("tr.candidate").forEach(function (row) {
      var on = parseFloat(row.dataset.score) >= minScore;
      row.hidden = !on;
      if (on) shown++;
    });
    document.getElementById("score-value").textContent = minScore.toFixed(2);
    document.getElementById("shown-count").textContent = shown + " of " + data.candidates.length;
    body.setAttribute("data-visible-candidates", shown);
    drawText();
  }

  function currentZ() { return nv.frac2vox(nv.scene.crosshairPos)[2]; }

  // canonical pixel-edge (x, y) on slice z -> CSS pixels over the canvas (axial view only)
  function screenXY(x, y, z) {
    var pos = nv.frac2canvasPos([(nx - x) / nx, (ny - y) / ny, (z + 0.5) / nz]);
    if (!pos) return null;
    var k = nv.canvas.width / nv.canvas.clientWidth;
    return [pos[0] / k, pos[1] / k];
  }

  function svgText(svg, xy, text, rgb, cls) {
    var t = document.createElementNS("http://www.w3.org/2000/svg", "text");
    t.setAttribute("x", xy[0]); t.setAttribute("y", xy[1]);
    t.setAttribute("fill", "rgb(" + rgb.join(",") + ")");
    t.setAttribute("class", cls);
    t.textContent = text;
    svg.appendChild(t);
  }

  // each visible candidate's id and score at its box on this slice, its axes' lengths where measured
  function drawText() {
    var svg = document.getElementById("nv-labels");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (!nv || !nv.volumes.length || nv.opts.sliceType !== nv.sliceTypeAxial) return;
    var z = currentZ();
    data.candidates.forEach(function (c) {
      if (!visible(c)) return;
      c.dets.forEach(function (d) {
        if (d[0] !== z) return;
        var xy = screenXY(d[1], d[2], z);
        if (xy) svgText(svg, [xy[0], xy[1] - 4], "C" + c.id + " " + d[5].toFixed(2), c.rgb, "box-label");
      });
      if (c.axes.z === z && c.axes.long) {
        var a = c.axes.long, end = a[2] > a[0] ? [a[2], a[3]] : [a[0], a[1]];
        var xy = screenXY(end[0], end[1], z);
        if (xy) svgText(svg, [xy[0] + 4, xy[1] + 4], c.long_mm.toFixed(1) + " x " + c.short_mm.toFixed(1) + " mm", [255, 255, 255], "axis-label");
      }
    });
  }

  function onLocation() {
    var z = currentZ();
    body.setAttribute("data-z", z);
    body.setAttribute("data-slice", data.slice_index[z]);
    document.getElementById("slice-value").textContent = "slice " + data.slice_index[z] + " (" + (z + 1) + " of " + nz + ")";
    document.querySelectorAll("tr.candidate").forEach(function (row) {
      row.classList.toggle("here", row.dataset.slices.split(",").indexOf(String(z)) >= 0);
    });
  }

  function jump(c) {
    var key = c.dets.filter(function (d) { return d[0] === c.key_z; })[0];
    var cx = (key[1] + key[3]) / 2, cy = (key[2] + key[4]) / 2;
    nv.scene.crosshairPos = [(nx - cx) / nx, (ny - cy) / ny, (c.key_z + 0.5) / nz];
    nv.createOnLocationChange();
    nv.drawScene();
  }

  // right-drag: horizontal changes the width, vertical the level (HU per CSS pixel)
  function wireWindowDrag(canvas) {
    var start = null;
    canvas.addEventListener("contextmenu", function (e) { e.preventDefault(); });
    canvas.addEventListener("mousedown", function (e) {
      if (e.button === 2) start = { x: e.clientX, y: e.clientY, width: win.width, level: win.level };
    });
    window.addEventListener("mousemove", function (e) {
      if (!start) return;
      win.width = Math.max(1, start.width + 4 * (e.clientX - start.x));
      win.level = start.level + 2 * (e.clientY - start.y);
      applyWindow();
    });
    window.addEventListener("mouseup", function () { start = null; });
  }

  function wireControls() {
    document.querySelectorAll("button.preset").forEach(function (b) {
      b.addEventListener("click", function () {
        var w = data.windows[b.dataset.preset];
        win.width = w[0]; win.level = w[1];
        applyWindow();
      });
    });
    document.querySelectorAll("button.plane").forEach(function (b) {
      b.addEventListener("click", function () {
        nv.setSliceType(nv["sliceType" + b.dataset.plane]);
        document.querySelectorAll("button.plane").forEach(function (o) { o.classList.toggle("active", o === b); });
        drawText();
      });
    });
    var slider = document.getElementById("score-slider");
    slider.addEventListener("input", function () { minScore = parseFloat(slider.value); applyScore(); });
    document.querySelectorAll("tr.candidate").forEach(function (row) {
      row.addEventListener("click", function () {
        var id = parseInt(row.dataset.candidateId, 10);
        jump(data.candidates.filter(function (c) { return c.id === id; })[0]);
      });
    });
    document.addEventListener("keydown", function (e) {
      var step = { ArrowUp: 1, PageUp: 1, ArrowDown: -1, PageDown: -1 }[e.key];
      if (!step || e.target.tagName === "INPUT") return;
      e.preventDefault();
      nv.moveCrosshairInVox(0, 0, step);
    });
  }

  async function start() {
    body.setAttribute("data-viewer", "loading");
    var canvas = document.getElementById("nv-canvas");
    nv = new niivue.Niivue({
      isRadiologicalConvention: true, isOrientationTextVisible: true, showAllOrientationMarkers: true,
      show3Dcrosshair: false, crosshairColor: [1, 1, 1, 0.35], crosshairWidth: 0.25,  // grey: no candidate hue
      backColor: [0, 0, 0, 1], isColorbar: false,
      dragAndDropEnabled: false, logLevel: "error", multiplanarShowRender: 0,
      mouseEventConfig: { leftButton: { primary: 8 }, rightButton: 0, centerButton: 3 }  // crosshair, none, pan
    });
    await nv.attachToCanvas(canvas);
    var ctBuffer = await decodeCT();
    performance.mark("a3d:ct-decoded");  // the marks time the loading steps (benchmarks/bench_report.py, a browser's profiler)
    ct = await niivue.NVImage.new(ctBuffer, "ct.nii");
    masks = await niivue.NVImage.new(bytes(data.masks).buffer, "masks.nii.gz");
    masks.opacity = 0.35;
    lines = await niivue.NVImage.new(bytes(data.lines).buffer, "lines.nii.gz");
    performance.mark("a3d:volumes-read");
    applyWindow(false);
    applyScore(false);
    [["ct", ct], ["masks", masks], ["lines", lines]].forEach(function (v) { nv.addVolume(v[1]); performance.mark("a3d:added-" + v[0]); });
    nv.setSliceType(nv.sliceTypeAxial);
    nv.onLocationChange = onLocation;
    var draw = nv.drawScene.bind(nv);
    nv.drawScene = function () { var r = draw(); drawText(); return r; };
    wireControls();
    wireWindowDrag(canvas);
    if (data.candidates.length) jump(data.candidates[0]);
    else { nv.scene.crosshairPos = [0.5, 0.5, 0.5]; nv.createOnLocationChange(); nv.drawScene(); }
    onLocation();
    performance.mark("a3d:ready");
    body.setAttribute("data-viewer", "ready");
  }

  start().catch(function (e) {
    body.setAttribute("data-viewer", "error");
    var el = document.getElementById("viewer-error");
    el.hidden = false;
    el.textContent = "The viewer could not start (" + e.message + "). It needs a browser with WebGL2; " +
      "the table below and the overlay images in overlays/ show the same candidates.";
    console.warn("a3d viewer: " + e.message);
  });
})();
