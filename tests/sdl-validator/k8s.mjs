#!/usr/bin/env node
// Checks Kubernetes manifests (container/k8s/*.yaml) against the Kubernetes API's own types, as
// an API server with strict field validation would, since the project has no cluster:
//   1. every field is one the API knows, with the JSON type it declares (a misspelled
//      `restartPolicy` would otherwise be dropped silently by a lenient client and turn a
//      native sidecar into an init container that never ends): walked with the official
//      JavaScript client's generated models (@kubernetes/client-node, their attributeTypeMap);
//   2. the OpenAPI schema's checks (required fields, types, formats): kubernetes-models'
//      validate(), generated from the same OpenAPI document.
// Prints one line per document, "FILE: ok KIND NAME" or "FILE: ERROR ...", and exits 1 when
// any document fails, 2 on a usage error.
import fs from "node:fs";
import { createRequire } from "node:module";
import yaml from "js-yaml";

const require = createRequire(import.meta.url);
const modelsDir =
  require.resolve("@kubernetes/client-node/package.json").replace(/package\.json$/, "") +
  "dist/gen/models/";

const kinds = {
  "apps/v1/StatefulSet": ["V1StatefulSet", "kubernetes-models/apps/v1/StatefulSet", "StatefulSet"],
  "apps/v1/Deployment": ["V1Deployment", "kubernetes-models/apps/v1/Deployment", "Deployment"],
  "v1/Pod": ["V1Pod", "kubernetes-models/v1/Pod", "Pod"],
};

const cache = new Map();
async function model(type) {
  if (!cache.has(type)) {
    const file = modelsDir + type + ".js";
    cache.set(type, fs.existsSync(file) ? (await import(file))[type] : null);
  }
  return cache.get(type);
}

function typeName(v) {
  return Array.isArray(v) ? "array" : v === null ? "null" : typeof v;
}

async function walk(value, type, path, errors) {
  const array = /^Array<(.*)>$/.exec(type);
  const map = /^\{ \[key: string\]: (.*); \}$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) return errors.push(`${path}: ${typeName(value)}, not a list`);
    for (let i = 0; i < value.length; i++) await walk(value[i], array[1], `${path}[${i}]`, errors);
  } else if (map) {
    if (typeName(value) !== "object") return errors.push(`${path}: ${typeName(value)}, not a map`);
    for (const [k, v] of Object.entries(value)) await walk(v, map[1], `${path}.${k}`, errors);
  } else if (["string", "number", "boolean"].includes(type)) {
    if (typeof value !== type) errors.push(`${path}: ${typeName(value)}, not a ${type}`);
  } else if (type === "IntOrString") {
    if (!["string", "number"].includes(typeof value)) errors.push(`${path}: not an int or a string`);
  } else if (type === "Date") {
    if (typeof value !== "string") errors.push(`${path}: not a timestamp`);
  } else {
    const m = await model(type);
    if (!m) return; // a free-form type (any, object)
    if (typeName(value) !== "object") return errors.push(`${path}: ${typeName(value)}, not a ${type}`);
    const fields = m.getAttributeTypeMap();
    for (const [k, v] of Object.entries(value)) {
      const f = fields.find((a) => a.baseName === k);
      if (!f) errors.push(`${path}.${k}: unknown field of ${type}`);
      else await walk(v, f.type, `${path}.${k}`, errors);
    }
  }
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node k8s.mjs FILE...");
  process.exit(2);
}
let failed = false;
for (const file of files) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    if (doc == null) continue;
    const errors = [];
    const kind = kinds[`${doc.apiVersion}/${doc.kind}`];
    if (!kind) {
      errors.push(`apiVersion ${doc.apiVersion} kind ${doc.kind}: not a kind this check knows`);
    } else {
      await walk(doc, kind[0], doc.kind, errors);
      const Model = (await import(kind[1]))[kind[2]];
      try {
        new Model(doc).validate();
      } catch (e) {
        errors.push(e.message);
      }
    }
    if (errors.length) {
      failed = true;
      console.log(`${file}: ERROR ${errors.join("; ")}`);
    } else {
      console.log(`${file}: ok ${doc.kind} ${doc.metadata?.name ?? ""}`);
    }
  }
}
process.exit(failed ? 1 : 0);
