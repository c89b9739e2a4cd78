#!/usr/bin/env node
// Runs Akash SDL files through Akash's own SDL validator (npm @akashnetwork/chain-sdk, the version
// pinned in package.json) and prints one JSON line per input:
//
//   {"name": "...", "ok": true|false, "errors": ["..."]}
//
// "ok" means what Akash's tooling accepts for a deployment on mainnet:
//   1. the YAML is parsed with js-yaml's load() (the parser and call the SDK's own SDL.fromString
//      uses; the copy resolved from the SDK's directory, so it is the SDK's own);
//   2. generateManifest(sdl, "mainnet") returns ok (JSON-schema checks + semantic checks +
//      "mainnet" denom check) and does not throw (it also parses cpu/memory/storage sizes);
//   3. the manifest groups (result.value.groups) and the deployment groups
//      (result.value.groupSpecs) are generated (both are lazy getters: reading them runs the code);
//   4. generateManifestVersion(groups) (the manifest hash sent on chain) resolves, and
//      manifestToSortedJSON(groupSpecs) serialises the deployment groups.
// Any exception in any step gives ok:false with the exception's message.
//
// Usage:
//   node validate.js FILE...                  one line per file, name = the path as given
//   node validate.js --stdin < inputs.json    inputs.json: [{"name": "...", "yaml": "..."}, ...]
// Options:
//   --network mainnet|sandbox|testnet  network id for the denom check (default: mainnet)
//   --legacy        also run the deprecated SDL class (new SDL(data, "beta3", network) +
//                   manifest() + groups() + manifestVersion()) and add {"legacy": {"ok", "errors"}}
//   --fail-on-invalid  exit 1 when any input is not ok (default: exit 0 once every line is printed)
// Exit status: 0 all lines printed; 1 some input invalid (only with --fail-on-invalid);
//              2 usage error, unreadable stdin JSON, or the SDK could not be loaded.
"use strict";

const fs = require("fs");
const path = require("path");

function die(msg) {
  process.stderr.write(`validate.js: ${msg}\n`);
  process.exit(2);
}

let sdk;
let yaml;
try {
  sdk = require("@akashnetwork/chain-sdk");
} catch (e) {
  die(`cannot load @akashnetwork/chain-sdk (run tests/sdl-validator/install.sh): ${e.message}`);
}
try {
  // The SDK's own js-yaml (the one its SDL.fromString imports), wherever npm put it: resolve it
  // from the SDK's package directory (its package.json is not in the SDK's "exports").
  let dir = path.dirname(require.resolve("@akashnetwork/chain-sdk", { paths: [__dirname] }));
  while (!fs.existsSync(path.join(dir, "package.json")) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  yaml = require(require.resolve("js-yaml", { paths: [dir] }));
} catch (e) {
  die(`cannot load js-yaml (run tests/sdl-validator/install.sh): ${e.message}`);
}

const { generateManifest, generateManifestVersion, manifestToSortedJSON, SDL } = sdk;

function parseArgs(argv) {
  const opts = { stdin: false, network: "mainnet", legacy: false, failOnInvalid: false, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--stdin") opts.stdin = true;
    else if (a === "--legacy") opts.legacy = true;
    else if (a === "--fail-on-invalid") opts.failOnInvalid = true;
    else if (a === "--network") {
      opts.network = argv[++i];
      if (!["mainnet", "sandbox", "testnet"].includes(opts.network)) die(`unknown network: ${opts.network}`);
    } else if (a === "--") {
      opts.files.push(...argv.slice(i + 1));
      break;
    } else if (a.startsWith("--")) die(`unknown option: ${a}`);
    else opts.files.push(a);
  }
  if (opts.stdin && opts.files.length) die("give either --stdin or file paths, not both");
  if (!opts.stdin && !opts.files.length) die("usage: validate.js FILE... | validate.js --stdin < [{name, yaml}, ...]");
  return opts;
}

function messageOf(e) {
  if (e && typeof e.message === "string") return e.message;
  return String(e);
}

// What the current tooling (generateManifest) accepts.
async function checkModern(text, network) {
  const data = yaml.load(text);
  const res = generateManifest(data, network);
  if (!res.ok) return res.value.map((e) => e.message);
  const groups = res.value.groups;
  const groupSpecs = res.value.groupSpecs;
  await generateManifestVersion(groups);
  manifestToSortedJSON(groupSpecs);
  return [];
}

// What the deprecated SDL class accepts (SDL.fromString(yaml, "beta3", network) is the same calls).
async function checkLegacy(text, network) {
  const data = yaml.load(text);
  const sdl = new SDL(data, "beta3", network);
  sdl.manifest();
  sdl.groups();
  await sdl.manifestVersion();
  return [];
}

async function run(check, text, network) {
  try {
    const errors = await check(text, network);
    return { ok: errors.length === 0, errors };
  } catch (e) {
    return { ok: false, errors: [messageOf(e)] };
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let inputs;
  if (opts.stdin) {
    let raw;
    try {
      raw = fs.readFileSync(0, "utf8");
    } catch (e) {
      die(`cannot read stdin: ${e.message}`);
    }
    try {
      inputs = JSON.parse(raw);
    } catch (e) {
      die(`stdin is not JSON: ${e.message}`);
    }
    if (!Array.isArray(inputs)) die("stdin JSON must be an array of {name, yaml}");
    inputs = inputs.map((it, i) => {
      if (!it || typeof it !== "object" || typeof it.yaml !== "string") {
        return { name: it && it.name !== undefined ? it.name : `#${i}`, error: `input #${i} has no string "yaml"` };
      }
      return { name: it.name !== undefined ? it.name : `#${i}`, yaml: it.yaml };
    });
  } else {
    inputs = opts.files.map((f) => {
      try {
        return { name: f, yaml: fs.readFileSync(f, "utf8") };
      } catch (e) {
        return { name: f, error: `cannot read ${f}: ${e.message}` };
      }
    });
  }

  let anyInvalid = false;
  const out = [];
  for (const input of inputs) {
    let line;
    if (input.error !== undefined) {
      line = { name: input.name, ok: false, errors: [input.error] };
      if (opts.legacy) line.legacy = { ok: false, errors: [input.error] };
    } else {
      const modern = await run(checkModern, input.yaml, opts.network);
      line = { name: input.name, ok: modern.ok, errors: modern.errors };
      if (opts.legacy) line.legacy = await run(checkLegacy, input.yaml, opts.network);
    }
    if (!line.ok) anyInvalid = true;
    out.push(JSON.stringify(line));
    if (out.length >= 256) {
      process.stdout.write(out.join("\n") + "\n");
      out.length = 0;
    }
  }
  if (out.length) process.stdout.write(out.join("\n") + "\n");
  process.exitCode = opts.failOnInvalid && anyInvalid ? 1 : 0;
}

main().catch((e) => die(`internal error: ${e && e.stack ? e.stack : e}`));
