// Validate a .glb / .gltf file with the Khronos glTF-Validator (npm package `gltf-validator`).
// Usage: NODE_PATH=<folder with node_modules> node validate_gltf.js FILE
// Prints the validator's report as JSON on stdout; exit status 1 when it reports errors.
"use strict";
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

async function main() {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node validate_gltf.js FILE");
    process.exit(2);
  }
  const bytes = new Uint8Array(fs.readFileSync(file));
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 100,
    externalResourceFunction: (uri) =>
      Promise.reject(new Error(`external resource ${uri}: gen4d writes self-contained files`)),
  });
  process.stdout.write(JSON.stringify(report, null, 1) + "\n");
  process.exit(report.issues.numErrors > 0 ? 1 : 0);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(3);
});
