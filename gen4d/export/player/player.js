// gen4d web player, the page: a .splat4d asset from the page itself (embedded base64), ?src=URL, the
// file picker or drag and drop; orbit controls, time slider, play / pause, speed (render.js draws).
//
// The page's API, for scripts and tests: window.gen4dPlayer.{load, setView, getView, setSize,
// renderOnce, measureFps, frame, gaussiansAt, asset}.
(function () {
  "use strict";

  const { orbitCamera, gaussiansAt, colours, sortBackToFront, Renderer, FLOATS_PER_SPLAT } = window.gen4dRender;

  // ---------------------------------------------------------------------------------------------
  // The player: state, framing, the frame pipeline, controls
  // ---------------------------------------------------------------------------------------------
  class Player {
    constructor(root) {
      this.root = root;
      this.canvas = root.querySelector("canvas");
      this.renderer = new Renderer(this.canvas);
      this.asset = null;
      this.time = 0;
      this.playing = true;
      this.speed = 1;
      this.smooth = true;
      this.background = [1, 1, 1];
      this.view = { azimuth: 0, elevation: 15, radius: 2, fov: 40, target: [0, 0, 0] };
      this.fixedSize = null;
      this.gaussians = null; // Gaussians at this.time
      this.timeDirty = true;
      this.viewDirty = true;
      this.lastTick = null;
      this.stats = { sortMs: 0, frameMs: 0, drawn: 0 };
    }

    load(data, name) {
      const asset = window.gen4dSplat4D.decode(data);
      this.asset = asset;
      const n = asset.count;
      this.depths = new Float32Array(n);
      this.order = new Uint32Array(n);
      this.counts = new Uint32Array(65536);
      this.rgb = new Float32Array(n * 3);
      this.instanceData = new Float32Array(n * FLOATS_PER_SPLAT);
      this.colourEye = null;
      this.time = 0;
      this.frame();
      this.timeDirty = true;
      this.viewDirty = true;
      this.emit("load", { name: name || "asset", count: n, frames: asset.frames, fps: asset.fps });
      return { count: n, frames: asset.frames, coeffs: asset.coeffs, fps: asset.fps, flags: asset.flags };
    }

    /** Frame the object: look at the middle of its robust bounds (2nd-98th percentiles of the
     * positions of the Gaussians with opacity >= 0.1 in the first and last frames) from the distance
     * at which 90 % of their bounding sphere fits the smaller side of the picture. */
    frame(view = {}) {
      const asset = this.asset;
      if (!asset) return;
      const axes = [[], [], []];
      for (const index of new Set([0, asset.frames - 1])) {
        const f = asset.frame(index);
        for (let i = 0; i < asset.count; i++) {
          if (f.opacity[i] < 0.1) continue;
          for (let k = 0; k < 3; k++) axes[k].push(f.means[3 * i + k]);
        }
      }
      let low = asset.boxLow.slice(), high = asset.boxHigh.slice();
      if (axes[0].length >= 4) {
        const pick = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
        axes.forEach((values, k) => {
          const sorted = Float32Array.from(values).sort();
          low[k] = pick(sorted, 0.02);
          high[k] = pick(sorted, 0.98);
        });
      }
      const centre = [0, 1, 2].map((k) => (low[k] + high[k]) / 2);
      const halfDiagonal = Math.max(Math.hypot(high[0] - low[0], high[1] - low[1], high[2] - low[2]) / 2, 1e-3);
      const fov = view.fov ?? this.view.fov;
      // The field of view spans the larger image side; fit the bounds in the smaller one.
      this._resize();
      const aspect = Math.min(this.canvas.width, this.canvas.height) / Math.max(this.canvas.width, this.canvas.height);
      const halfFovSmall = Math.atan(Math.tan(((fov / 2) * Math.PI) / 180) * aspect);
      const radius = (0.9 * halfDiagonal) / Math.sin(halfFovSmall); // the sphere around the box is loose
      this.setView({ azimuth: 0, elevation: 15, fov, ...view, radius: view.radius ?? radius, target: view.target ?? centre });
    }

    setView(view) {
      for (const key of ["azimuth", "elevation", "radius", "fov"]) {
        if (view[key] !== undefined) {
          const value = Number(view[key]);
          if (!Number.isFinite(value)) throw new Error(`setView: ${key} must be a finite number, got ${view[key]}`);
          this.view[key] = value;
        }
      }
      this.view.radius = Math.max(this.view.radius, 1e-4);
      this.view.fov = Math.min(Math.max(this.view.fov, 1), 170);
      if (view.target !== undefined) this.view.target = Array.from(view.target, Number);
      if (view.time !== undefined) this.setTime(Number(view.time));
      if (view.playing !== undefined) this.setPlaying(!!view.playing);
      if (view.smooth !== undefined) this.smooth = !!view.smooth;
      if (view.background !== undefined) this.background = Array.from(view.background, Number);
      this.timeDirty = this.timeDirty || view.smooth !== undefined;
      this.viewDirty = true;
      this.emit("view", this.getView());
    }

    getView() {
      return {
        ...this.view,
        target: this.view.target.slice(),
        time: this.time,
        playing: this.playing,
        smooth: this.smooth,
        background: this.background.slice(),
      };
    }

    setTime(time) {
      this.time = Math.min(Math.max(time, 0), 1);
      this.timeDirty = true;
      this.emit("time", this.time);
    }

    setPlaying(playing) {
      this.playing = playing;
      this.lastTick = null;
      this.emit("playing", playing);
    }

    /** A fixed drawing-buffer size in pixels (tests, screenshots); null: fill the page. */
    setSize(width, height) {
      this.fixedSize = width && height ? [Math.round(width), Math.round(height)] : null;
      this.viewDirty = true;
    }

    _resize() {
      const canvas = this.canvas;
      let width, height;
      if (this.fixedSize) {
        [width, height] = this.fixedSize;
        canvas.style.width = `${width}px`;
        canvas.style.height = `${height}px`;
      } else {
        canvas.style.width = "";
        canvas.style.height = "";
        const ratio = window.devicePixelRatio || 1;
        width = Math.max(1, Math.round(canvas.clientWidth * ratio));
        height = Math.max(1, Math.round(canvas.clientHeight * ratio));
      }
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
        this.viewDirty = true;
      }
    }

    /** Bring the picture up to date (Gaussians at the time, order and colours for the view) and
     * draw it; returns the milliseconds spent on the CPU side and the Gaussians drawn. */
    update(force = false) {
      if (!this.asset) return null;
      this._resize();
      if (!(force || this.timeDirty || this.viewDirty)) return null;
      const start = performance.now();
      if (this.timeDirty || !this.gaussians) this.gaussians = gaussiansAt(this.asset, this.time, this.smooth);
      const camera = orbitCamera(this.view, this.canvas.width, this.canvas.height);
      const { means, covariances, opacity } = this.gaussians;
      if (this.asset.coeffs > 1 || this.timeDirty || !this.colourEye) {
        colours(this.asset, means, camera.eye, this.rgb);
        this.colourEye = camera.eye;
      }
      const visible = sortBackToFront(means, camera, this.depths, this.order, this.counts);
      const data = this.instanceData;
      for (let j = 0; j < visible; j++) {
        const i = this.order[j];
        const o = j * FLOATS_PER_SPLAT;
        data[o] = means[3 * i];
        data[o + 1] = means[3 * i + 1];
        data[o + 2] = means[3 * i + 2];
        data[o + 3] = opacity[i];
        for (let k = 0; k < 6; k++) data[o + 4 + k] = covariances[6 * i + k];
        data[o + 12] = this.rgb[3 * i];
        data[o + 13] = this.rgb[3 * i + 1];
        data[o + 14] = this.rgb[3 * i + 2];
      }
      this.renderer.upload(data, visible);
      this.renderer.draw(camera, this.background);
      this.timeDirty = false;
      this.viewDirty = false;
      this.stats = { cpuMs: performance.now() - start, drawn: visible };
      return this.stats;
    }

    /** Draw now and wait for the GPU (for tests): {cpuMs, totalMs, drawn}. */
    renderOnce() {
      const start = performance.now();
      const stats = this.update(true);
      this.renderer.gl.finish();
      return { ...stats, totalMs: performance.now() - start };
    }

    tick(now) {
      if (this.playing && this.asset) {
        if (this.lastTick !== null) {
          const duration = Math.max(this.asset.frames - 1, 1) / (this.asset.fps > 0 ? this.asset.fps : 24);
          let time = this.time + ((now - this.lastTick) / 1000) * (this.speed / duration);
          if (time > 1) time -= Math.floor(time);
          this.setTime(time);
        }
        this.lastTick = now;
      }
      this.update();
    }

    /** Frames per second over ``frames`` animation frames while the picture changes every frame
     * (time advances and the camera turns, so each frame interpolates, sorts, uploads and draws). */
    measureFps(frames = 60) {
      const playing = this.playing;
      this.setPlaying(false);
      return new Promise((resolve) => {
        let count = -1;
        let start = 0;
        let cpuMs = 0;
        const step = (now) => {
          if (count === 0) start = now;
          if (count === frames) {
            this.setPlaying(playing);
            resolve({ fps: (1000 * frames) / (now - start), frames, cpuMsPerFrame: cpuMs / frames, drawn: this.stats.drawn });
            return;
          }
          count++;
          this.setTime((this.time + 1 / Math.max(this.asset.frames - 1, 1)) % 1);
          this.view.azimuth += 1;
          this.viewDirty = true;
          if (count > 0) cpuMs += this.update().cpuMs;
          else this.update();
          this._loopStep = requestAnimationFrame(step);
        };
        requestAnimationFrame(step);
      });
    }

    emit(name, detail) {
      this.root.dispatchEvent(new CustomEvent(`gen4d-${name}`, { detail }));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Page wiring: asset sources (embedded, ?src=, file picker, drag and drop), controls
  // ---------------------------------------------------------------------------------------------
  function base64ToBytes(text) {
    const clean = text.replace(/\s+/g, "");
    const binary = atob(clean);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function viewFromHash() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    const view = {};
    for (const key of ["azimuth", "elevation", "radius", "fov", "time"]) {
      if (params.has(key)) view[key] = Number(params.get(key));
    }
    if (params.has("target")) view.target = params.get("target").split(",").map(Number);
    // A link to a moment shows that moment: a time in the fragment pauses unless it says playing=1.
    if (params.has("time") || params.has("playing")) view.playing = params.get("playing") === "1";
    return view;
  }

  function start() {
    const root = document.getElementById("gen4d-player");
    const $ = (id) => document.getElementById(id);
    const status = $("gen4d-status");
    const say = (text, isError = false) => {
      status.textContent = text;
      status.classList.toggle("error", isError);
    };
    let player;
    try {
      player = new Player(root);
    } catch (err) {
      say(`cannot start: ${err.message}`, true);
      window.gen4dPlayer = { ready: false, error: `cannot start: ${err.message}` };
      return;
    }
    const api = {
      player,
      load: (data, name) => player.load(data, name),
      setView: (view) => {
        player.setView(view);
        return player.getView();
      },
      getView: () => player.getView(),
      setSize: (width, height) => player.setSize(width, height),
      frame: (view) => player.frame(view),
      renderOnce: () => player.renderOnce(),
      gaussiansAt: (time, smooth = true) => gaussiansAt(player.asset, time, smooth),
      measureFps: (frames) => player.measureFps(frames),
      get asset() {
        return player.asset;
      },
      ready: false,
      error: null,
    };
    window.gen4dPlayer = api;

    const slider = $("gen4d-time");
    const play = $("gen4d-play");
    const speed = $("gen4d-speed");
    const smooth = $("gen4d-smooth");
    const clock = $("gen4d-clock");
    const showTime = () => {
      const asset = player.asset;
      slider.value = String(player.time);
      clock.textContent = asset ? `t ${player.time.toFixed(3)} · frame ${(player.time * (asset.frames - 1)).toFixed(1)} / ${asset.frames - 1}` : "";
    };
    root.addEventListener("gen4d-time", showTime);
    root.addEventListener("gen4d-view", (e) => {
      const hex = (v) => Math.round(Math.min(Math.max(v, 0), 1) * 255).toString(16).padStart(2, "0");
      $("gen4d-background").value = `#${e.detail.background.map(hex).join("")}`;
      smooth.checked = e.detail.smooth;
    });
    root.addEventListener("gen4d-playing", (e) => (play.textContent = e.detail ? "❚❚" : "▶"));
    root.addEventListener("gen4d-load", (e) => {
      const d = e.detail;
      say(`${d.name}: ${d.count.toLocaleString()} Gaussians, ${d.frames} frames at ${d.fps} fps`);
      showTime();
    });
    slider.addEventListener("input", () => {
      player.setPlaying(false);
      player.setTime(Number(slider.value));
    });
    play.addEventListener("click", () => player.setPlaying(!player.playing));
    speed.addEventListener("change", () => (player.speed = Number(speed.value)));
    smooth.addEventListener("change", () => player.setView({ smooth: smooth.checked }));
    $("gen4d-background").addEventListener("input", (e) => {
      const hex = e.target.value;
      player.setView({ background: [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255) });
    });
    $("gen4d-reframe").addEventListener("click", () => player.frame());

    const open = async (getBytes, name) => {
      try {
        say(`loading ${name} ...`);
        const bytes = await getBytes();
        player.load(bytes, name);
        const hashView = viewFromHash();
        if (Object.keys(hashView).length) player.setView(hashView);
        api.ready = true;
        api.error = null;
      } catch (err) {
        api.error = String(err.message || err);
        say(`${name}: ${api.error}`, true);
      }
    };
    const openFile = (file) => open(async () => new Uint8Array(await file.arrayBuffer()), file.name);
    $("gen4d-file").addEventListener("change", (e) => e.target.files[0] && openFile(e.target.files[0]));
    window.addEventListener("dragover", (e) => {
      e.preventDefault();
      root.classList.add("dropping");
    });
    window.addEventListener("dragleave", () => root.classList.remove("dropping"));
    window.addEventListener("drop", (e) => {
      e.preventDefault();
      root.classList.remove("dropping");
      if (e.dataTransfer.files[0]) openFile(e.dataTransfer.files[0]);
    });

    // Orbit: drag to turn, shift- or right-drag to pan, wheel to move in, double-click to reframe.
    const pointers = new Map();
    const canvas = player.canvas;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY, pan: e.shiftKey || e.button === 2 });
    });
    canvas.addEventListener("pointerup", (e) => pointers.delete(e.pointerId));
    canvas.addEventListener("pointercancel", (e) => pointers.delete(e.pointerId));
    canvas.addEventListener("pointermove", (e) => {
      const last = pointers.get(e.pointerId);
      if (!last) return;
      const dx = e.clientX - last.x, dy = e.clientY - last.y;
      last.x = e.clientX;
      last.y = e.clientY;
      const view = player.view;
      if (last.pan || pointers.size > 1) {
        const camera = orbitCamera(view, canvas.width, canvas.height);
        const perPixel = (2 * view.radius * Math.tan((view.fov * Math.PI) / 360)) / Math.max(canvas.clientWidth, canvas.clientHeight);
        const [right, down] = camera.rows;
        const scale = pointers.size > 1 ? 0.5 : 1;
        player.setView({ target: view.target.map((v, k) => v - scale * perPixel * (dx * right[k] + dy * down[k])) });
      } else {
        player.setView({ azimuth: view.azimuth - 0.4 * dx, elevation: Math.min(89, Math.max(-89, view.elevation + 0.4 * dy)) });
      }
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      player.setView({ radius: player.view.radius * Math.exp(e.deltaY * 0.001) });
    }, { passive: false });
    canvas.addEventListener("dblclick", () => player.frame());
    window.addEventListener("keydown", (e) => {
      if (e.key === " " && e.target === document.body) {
        e.preventDefault();
        player.setPlaying(!player.playing);
      }
    });

    const loop = (now) => {
      try {
        player.tick(now);
      } catch (err) {
        api.error = String(err.message || err);
        say(api.error, true);
      }
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);

    const embedded = document.getElementById("gen4d-asset");
    const source = new URLSearchParams(window.location.search).get("src");
    if (embedded && embedded.textContent.trim()) {
      open(async () => base64ToBytes(embedded.textContent), embedded.dataset.name || "embedded asset");
    } else if (source) {
      open(async () => {
        let response;
        try {
          response = await fetch(source);
        } catch (err) {
          if (window.location.protocol !== "file:") throw err;
          throw new Error(
            "browsers do not fetch files from a file:// page: serve this folder over HTTP (python3 -m http.server), " +
              "open the file with the button or by drag and drop, or bundle it with gen4d export --format html"
          );
        }
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        return new Uint8Array(await response.arrayBuffer());
      }, source);
    } else {
      say("open a .splat4d file (button or drag and drop), or pass ?src=URL");
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
