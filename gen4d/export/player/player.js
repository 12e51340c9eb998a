// gen4d web player: draws a .splat4d asset (4D Gaussians) with WebGL2.
//
// Rendering follows gen4d's rasteriser (gen4d/render/projection.py, gsplat's classic mode): EWA
// projection with the Jacobian's x/z, y/z clamped to 1.3x the half field of view, a 0.3 px^2 low-pass
// on the 2D covariance, alpha = min(0.999, o exp(-d^T conic d / 2)) skipped below 1/255, each
// Gaussian drawn as an instanced screen-space quad around its alpha >= 1/255 ellipse, sorted back to front
// by camera depth on the CPU (counting sort) and blended with premultiplied "over" into a float
// target where the browser allows it. Cameras use gen4d's convention (gen4d/cameras.py): world Z up,
// the front camera on -Y, azimuth counter-clockwise seen from above, a pinhole whose field of view
// spans the larger image side. Time t in [0, 1]: stored frame f is at t = f / (F - 1); between two
// stored frames positions, log-scales and opacities are interpolated linearly and rotations by
// normalised linear interpolation ("smooth" on), or the nearest stored frame is shown (as
// gen4d.export.splat4d.Splat4D.at does).
//
// The page's API, for scripts and tests: window.gen4dPlayer.{load, setView, getView, setSize,
// renderOnce, measureFps, frame, gaussiansAt, asset}.
(function () {
  "use strict";

  const SH_C0 = 0.28209479177387814;
  const SH_C1 = 0.4886025119029199;
  const SH_C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396];
  const SH_C3 = [
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
    1.445305721320277, -0.5900435899266435,
  ];
  const NEAR = 0.01;
  const EPS2D = 0.3;
  const FLOATS_PER_SPLAT = 16;

  // ---------------------------------------------------------------------------------------------
  // Camera (gen4d/cameras.py: orbit, look_at, spherical_to_position)
  // ---------------------------------------------------------------------------------------------
  function orbitCamera(view, width, height) {
    const rad = Math.PI / 180;
    const el = view.elevation * rad;
    const az = view.azimuth * rad;
    const target = view.target;
    const eye = [
      target[0] + view.radius * Math.cos(el) * Math.sin(az),
      target[1] - view.radius * Math.cos(el) * Math.cos(az),
      target[2] + view.radius * Math.sin(el),
    ];
    const forward = normalise([target[0] - eye[0], target[1] - eye[1], target[2] - eye[2]]);
    let right = cross(forward, [0, 0, 1]);
    if (Math.hypot(...right) < 1e-6) {
      // Looking straight along Z: world +X made orthogonal to forward (as look_at does).
      const along = forward[0];
      right = [1 - along * forward[0], -along * forward[1], -along * forward[2]];
    }
    right = normalise(right);
    const down = cross(forward, right);
    const rows = [right, down, forward];
    const translation = rows.map((row) => -(row[0] * eye[0] + row[1] * eye[1] + row[2] * eye[2]));
    const focal = (0.5 * Math.max(width, height)) / Math.tan((view.fov * rad) / 2);
    return { rows, translation, eye, fx: focal, fy: focal, cx: width / 2, cy: height / 2, width, height };
  }

  function normalise(v) {
    const norm = Math.hypot(v[0], v[1], v[2]) || 1;
    return [v[0] / norm, v[1] / norm, v[2] / norm];
  }

  function cross(a, b) {
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  }

  // ---------------------------------------------------------------------------------------------
  // Gaussians at a time: interpolated frame -> means, 3D covariances, opacities
  // ---------------------------------------------------------------------------------------------
  function gaussiansAt(asset, time, smooth) {
    const last = asset.frames - 1;
    const position = Math.min(Math.max(time, 0), 1) * last;
    let first = smooth ? Math.floor(position) : Math.round(position);
    first = Math.min(first, last);
    const second = Math.min(first + 1, last);
    const weight = smooth && second !== first ? position - first : 0;
    const a = asset.frame(first);
    const b = weight > 0 ? asset.frame(second) : a;
    const n = asset.count;
    const means = new Float32Array(n * 3);
    const covariances = new Float32Array(n * 6);
    const opacity = new Float32Array(n);
    const lerp = (x, y) => x + (y - x) * weight;
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < 3; k++) means[3 * i + k] = lerp(a.means[3 * i + k], b.means[3 * i + k]);
      opacity[i] = lerp(a.opacity[i], b.opacity[i]);
      const sign = weight > 0 && dot4(a.quats, b.quats, 4 * i) < 0 ? -1 : 1; // q and -q: the same rotation
      let w = lerp(a.quats[4 * i], sign * b.quats[4 * i]);
      let x = lerp(a.quats[4 * i + 1], sign * b.quats[4 * i + 1]);
      let y = lerp(a.quats[4 * i + 2], sign * b.quats[4 * i + 2]);
      let z = lerp(a.quats[4 * i + 3], sign * b.quats[4 * i + 3]);
      const norm = Math.max(Math.hypot(w, x, y, z), 1e-12);
      w /= norm;
      x /= norm;
      y /= norm;
      z /= norm;
      const sx = Math.exp(lerp(a.logScales[3 * i], b.logScales[3 * i]));
      const sy = Math.exp(lerp(a.logScales[3 * i + 1], b.logScales[3 * i + 1]));
      const sz = Math.exp(lerp(a.logScales[3 * i + 2], b.logScales[3 * i + 2]));
      // M = R S (gen4d.gaussians.core.quaternion_to_matrix); covariance = M M^T.
      const m00 = (1 - 2 * (y * y + z * z)) * sx, m01 = 2 * (x * y - w * z) * sy, m02 = 2 * (x * z + w * y) * sz;
      const m10 = 2 * (x * y + w * z) * sx, m11 = (1 - 2 * (x * x + z * z)) * sy, m12 = 2 * (y * z - w * x) * sz;
      const m20 = 2 * (x * z - w * y) * sx, m21 = 2 * (y * z + w * x) * sy, m22 = (1 - 2 * (x * x + y * y)) * sz;
      const c = covariances.subarray(6 * i, 6 * i + 6);
      c[0] = m00 * m00 + m01 * m01 + m02 * m02;
      c[1] = m00 * m10 + m01 * m11 + m02 * m12;
      c[2] = m00 * m20 + m01 * m21 + m02 * m22;
      c[3] = m10 * m10 + m11 * m11 + m12 * m12;
      c[4] = m10 * m20 + m11 * m21 + m12 * m22;
      c[5] = m20 * m20 + m21 * m21 + m22 * m22;
    }
    return { means, covariances, opacity, first, second, weight };
  }

  function dot4(a, b, at) {
    return a[at] * b[at] + a[at + 1] * b[at + 1] + a[at + 2] * b[at + 2] + a[at + 3] * b[at + 3];
  }

  // Colours seen from the camera centre (gen4d/gaussians/sh.py eval_sh): clamp_min(sum + 0.5, 0).
  function colours(asset, means, eye, out) {
    const n = asset.count;
    const k = asset.coeffs;
    const sh = asset.sh;
    for (let i = 0; i < n; i++) {
      const base = i * k * 3;
      let dx = means[3 * i] - eye[0], dy = means[3 * i + 1] - eye[1], dz = means[3 * i + 2] - eye[2];
      const norm = Math.max(Math.hypot(dx, dy, dz), 1e-12);
      const x = dx / norm, y = dy / norm, z = dz / norm;
      for (let ch = 0; ch < 3; ch++) {
        const c = (j) => sh[base + 3 * j + ch];
        let value = SH_C0 * c(0);
        if (k > 1) {
          value += -SH_C1 * y * c(1) + SH_C1 * z * c(2) - SH_C1 * x * c(3);
          if (k > 4) {
            const xx = x * x, yy = y * y, zz = z * z;
            value +=
              SH_C2[0] * x * y * c(4) + SH_C2[1] * y * z * c(5) + SH_C2[2] * (2 * zz - xx - yy) * c(6) +
              SH_C2[3] * x * z * c(7) + SH_C2[4] * (xx - yy) * c(8);
            if (k > 9) {
              value +=
                SH_C3[0] * y * (3 * xx - yy) * c(9) + SH_C3[1] * x * y * z * c(10) +
                SH_C3[2] * y * (4 * zz - xx - yy) * c(11) + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * c(12) +
                SH_C3[4] * x * (4 * zz - xx - yy) * c(13) + SH_C3[5] * z * (xx - yy) * c(14) +
                SH_C3[6] * x * (xx - 3 * yy) * c(15);
            }
          }
        }
        out[3 * i + ch] = Math.max(value + 0.5, 0);
      }
    }
    return out;
  }

  // Back-to-front order of the Gaussians in front of the near plane: a 16-bit counting sort on depth.
  function sortBackToFront(means, camera, depths, order, counts) {
    const n = depths.length;
    const [r0, r1, r2] = camera.rows[2];
    const t = camera.translation[2];
    let low = Infinity, high = -Infinity;
    for (let i = 0; i < n; i++) {
      depths[i] = r0 * means[3 * i] + r1 * means[3 * i + 1] + r2 * means[3 * i + 2] + t;
      const z = depths[i]; // the stored float32 value, so that every bucket below lies in 0..65535
      if (z > NEAR) {
        if (z < low) low = z;
        if (z > high) high = z;
      }
    }
    counts.fill(0);
    if (!(high >= low)) return 0;
    const scale = high > low ? 65535 / (high - low) : 0;
    const bucket = (z) => 65535 - Math.min(65535, Math.max(0, Math.floor((z - low) * scale))); // far first
    let visible = 0;
    for (let i = 0; i < n; i++) {
      if (depths[i] > NEAR) {
        counts[bucket(depths[i])]++;
        visible++;
      }
    }
    for (let b = 1; b < 65536; b++) counts[b] += counts[b - 1];
    for (let i = n - 1; i >= 0; i--) {
      if (depths[i] > NEAR) order[--counts[bucket(depths[i])]] = i;
    }
    return visible;
  }

  // ---------------------------------------------------------------------------------------------
  // WebGL2
  // ---------------------------------------------------------------------------------------------
  const SPLAT_VERTEX = `#version 300 es
precision highp float;
layout(location = 0) in vec2 corner;
layout(location = 1) in vec4 meanOpacity;
layout(location = 2) in vec4 covA;   // xx, xy, xz, yy
layout(location = 3) in vec4 covB;   // yz, zz, -, -
layout(location = 4) in vec4 colour;
uniform mat3 rotation;               // world -> camera (OpenCV axes)
uniform vec3 translation;
uniform vec4 intrinsics;             // fx, fy, cx, cy (pixels)
uniform vec2 size;                   // image width, height (pixels)
out vec2 offset;                     // pixel - projected mean
out vec3 conic;
out vec4 tint;
const float NEAR = ${NEAR.toFixed(4)};
const float EPS2D = ${EPS2D.toFixed(4)};
void cull() { gl_Position = vec4(0.0, 0.0, 2.0, 1.0); offset = vec2(0.0); conic = vec3(0.0); tint = vec4(0.0); }
void main() {
  vec3 cam = rotation * meanOpacity.xyz + translation;
  float z = cam.z;
  if (z <= NEAR) { cull(); return; }
  float fx = intrinsics.x, fy = intrinsics.y, cx = intrinsics.z, cy = intrinsics.w;
  float tanX = 0.5 * size.x / fx, tanY = 0.5 * size.y / fy;
  float tx = z * clamp(cam.x / z, -(cx / fx + 0.3 * tanX), (size.x - cx) / fx + 0.3 * tanX);
  float ty = z * clamp(cam.y / z, -(cy / fy + 0.3 * tanY), (size.y - cy) / fy + 0.3 * tanY);
  mat3 cov = mat3(covA.x, covA.y, covA.z, covA.y, covA.w, covB.x, covA.z, covB.x, covB.y);
  mat3 covCam = rotation * cov * transpose(rotation);
  vec3 j0 = vec3(fx / z, 0.0, -fx * tx / (z * z));
  vec3 j1 = vec3(0.0, fy / z, -fy * ty / (z * z));
  float a = dot(j0, covCam * j0) + EPS2D;
  float b = dot(j0, covCam * j1);
  float c = dot(j1, covCam * j1) + EPS2D;
  float det = a * c - b * b;
  float opacity = meanOpacity.w;
  float k2 = 2.0 * log(max(opacity * 255.0, 1e-12));
  if (det <= 0.0 || k2 <= 0.0) { cull(); return; }
  // The quad: the rectangle around the alpha >= 1/255 ellipse along the covariance's eigenvectors
  // (fewer fragments than its axis-aligned box for elongated Gaussians).
  float middle = 0.5 * (a + c);
  float spread = sqrt(max(middle * middle - det, 0.0));
  float major = middle + spread, minor = max(middle - spread, 0.0);
  vec2 axis = abs(b) > 1e-9 * major ? normalize(vec2(b, major - a)) : (a >= c ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
  vec2 mean2d = vec2(fx * cam.x / z + cx, fy * cam.y / z + cy);
  float k = sqrt(k2);
  offset = corner.x * k * sqrt(major) * axis + corner.y * k * sqrt(minor) * vec2(-axis.y, axis.x);
  vec2 pixel = mean2d + offset;
  gl_Position = vec4(pixel.x / size.x * 2.0 - 1.0, 1.0 - pixel.y / size.y * 2.0, 0.0, 1.0);
  conic = vec3(c, -b, a) / det;
  tint = vec4(colour.rgb, opacity);
}`;

  const SPLAT_FRAGMENT = `#version 300 es
precision highp float;
in vec2 offset;
in vec3 conic;
in vec4 tint;
out vec4 result;
void main() {
  float sigma = 0.5 * (conic.x * offset.x * offset.x + conic.z * offset.y * offset.y) + conic.y * offset.x * offset.y;
  float alpha = min(0.999, tint.a * exp(-sigma));
  if (sigma < 0.0 || alpha < 1.0 / 255.0) discard;
  result = vec4(tint.rgb * alpha, alpha);
}`;

  const COPY_VERTEX = `#version 300 es
const vec2 corners[3] = vec2[3](vec2(-1.0, -1.0), vec2(3.0, -1.0), vec2(-1.0, 3.0));
void main() { gl_Position = vec4(corners[gl_VertexID], 0.0, 1.0); }`;

  const COPY_FRAGMENT = `#version 300 es
precision highp float;
uniform sampler2D image;
out vec4 result;
void main() { result = vec4(clamp(texelFetch(image, ivec2(gl_FragCoord.xy), 0).rgb, 0.0, 1.0), 1.0); }`;

  function compile(gl, vertex, fragment) {
    const program = gl.createProgram();
    for (const [type, source] of [
      [gl.VERTEX_SHADER, vertex],
      [gl.FRAGMENT_SHADER, fragment],
    ]) {
      const shader = gl.createShader(type);
      gl.shaderSource(shader, source);
      gl.compileShader(shader);
      if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
      gl.attachShader(program, shader);
    }
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    return program;
  }

  class Renderer {
    constructor(canvas) {
      const gl = canvas.getContext("webgl2", {
        alpha: false,
        antialias: false,
        depth: false,
        premultipliedAlpha: true,
        preserveDrawingBuffer: true,
      });
      if (!gl) throw new Error("this browser has no WebGL2");
      this.gl = gl;
      this.canvas = canvas;
      this.splatProgram = compile(gl, SPLAT_VERTEX, SPLAT_FRAGMENT);
      this.copyProgram = compile(gl, COPY_VERTEX, COPY_FRAGMENT);
      this.uniforms = {};
      for (const name of ["rotation", "translation", "intrinsics", "size"]) {
        this.uniforms[name] = gl.getUniformLocation(this.splatProgram, name);
      }
      this.vao = gl.createVertexArray();
      gl.bindVertexArray(this.vao);
      const corners = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, corners);
      gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
      gl.enableVertexAttribArray(0);
      gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
      this.instances = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, this.instances);
      for (let slot = 1; slot <= 4; slot++) {
        gl.enableVertexAttribArray(slot);
        gl.vertexAttribPointer(slot, 4, gl.FLOAT, false, FLOATS_PER_SPLAT * 4, (slot - 1) * 16);
        gl.vertexAttribDivisor(slot, 1);
      }
      gl.bindVertexArray(null);
      // A float target keeps the many blending steps from rounding to 8 bits each.
      this.floatTarget = !!gl.getExtension("EXT_color_buffer_float");
      this.target = null;
      this.count = 0;
    }

    upload(data, count) {
      const gl = this.gl;
      gl.bindBuffer(gl.ARRAY_BUFFER, this.instances);
      gl.bufferData(gl.ARRAY_BUFFER, data.subarray(0, count * FLOATS_PER_SPLAT), gl.DYNAMIC_DRAW);
      this.count = count;
    }

    _framebuffer(width, height) {
      const gl = this.gl;
      if (this.target && this.target.width === width && this.target.height === height) return this.target;
      if (this.target) {
        gl.deleteFramebuffer(this.target.framebuffer);
        gl.deleteTexture(this.target.texture);
      }
      const texture = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, texture);
      gl.texStorage2D(gl.TEXTURE_2D, 1, gl.RGBA16F, width, height);
      const framebuffer = gl.createFramebuffer();
      gl.bindFramebuffer(gl.FRAMEBUFFER, framebuffer);
      gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, texture, 0);
      if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) {
        this.floatTarget = false;
        gl.bindFramebuffer(gl.FRAMEBUFFER, null);
        return null;
      }
      this.target = { texture, framebuffer, width, height };
      return this.target;
    }

    draw(camera, background) {
      const gl = this.gl;
      const { width, height } = camera;
      const target = this.floatTarget ? this._framebuffer(width, height) : null;
      gl.bindFramebuffer(gl.FRAMEBUFFER, target ? target.framebuffer : null);
      gl.viewport(0, 0, width, height);
      gl.clearColor(background[0], background[1], background[2], 1);
      gl.clear(gl.COLOR_BUFFER_BIT);
      gl.useProgram(this.splatProgram);
      const r = camera.rows;
      // GLSL matrices are column-major: the columns of world_to_camera's rotation.
      gl.uniformMatrix3fv(this.uniforms.rotation, false, [r[0][0], r[1][0], r[2][0], r[0][1], r[1][1], r[2][1], r[0][2], r[1][2], r[2][2]]);
      gl.uniform3fv(this.uniforms.translation, camera.translation);
      gl.uniform4f(this.uniforms.intrinsics, camera.fx, camera.fy, camera.cx, camera.cy);
      gl.uniform2f(this.uniforms.size, width, height);
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA); // premultiplied "over", back to front
      gl.bindVertexArray(this.vao);
      gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, this.count);
      gl.bindVertexArray(null);
      gl.disable(gl.BLEND);
      if (target) {
        gl.bindFramebuffer(gl.FRAMEBUFFER, null);
        gl.useProgram(this.copyProgram);
        gl.activeTexture(gl.TEXTURE0);
        gl.bindTexture(gl.TEXTURE_2D, target.texture);
        gl.drawArrays(gl.TRIANGLES, 0, 3);
      }
    }
  }

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
