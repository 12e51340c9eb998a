// gen4d web player, rendering: Gaussians of a .splat4d asset at a time, seen from gen4d's orbit camera,
// drawn with WebGL2.
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
// Defines window.gen4dRender = {orbitCamera, gaussiansAt, colours, sortBackToFront, Renderer,
// FLOATS_PER_SPLAT}; player.js uses it.
(function (global) {
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

  global.gen4dRender = { orbitCamera, gaussiansAt, colours, sortBackToFront, Renderer, FLOATS_PER_SPLAT };
})(typeof window !== "undefined" ? window : globalThis);
