// Second Kubernetes schema check, independent of kubernetes-validate: every rendered object is
// loaded into its typed model from the npm package kubernetes-models (validators generated from
// the Kubernetes OpenAPI spec; @kubernetes-models/prometheus-operator for the ServiceMonitor
// CRD) and validated with ajv: required fields, types, enums and formats.
// Usage: node k8s-models.mjs FILE.yaml...   (.ci/validate-deploy installs the packages)
import fs from "node:fs";
import { loadAll } from "js-yaml";

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const pkg =
    group === "monitoring.coreos.com"
      ? `@kubernetes-models/prometheus-operator/${group}/${version}`
      : `kubernetes-models/${group ? `${group}/` : ""}${version}`;
  try {
    return (await import(pkg))[kind] ?? null;
  } catch (err) {
    if (err.code === "ERR_PACKAGE_PATH_NOT_EXPORTED" || err.code === "ERR_MODULE_NOT_FOUND") {
      return null;
    }
    throw err;
  }
}

let failures = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of loadAll(fs.readFileSync(file, "utf8"))) {
    if (!doc) continue;
    const where = `${file}: ${doc.kind}/${doc.metadata?.name}`;
    const Model = await modelFor(doc.apiVersion, doc.kind);
    if (!Model) {
      console.error(`FAIL ${where}: no model for ${doc.apiVersion} ${doc.kind}`);
      failures++;
      continue;
    }
    try {
      new Model(doc).validate();
    } catch (err) {
      console.error(`FAIL ${where}: ${err.message}`);
      failures++;
      continue;
    }
    checked++;
    console.log(`ok   ${where} (${doc.apiVersion})`);
  }
}
console.log(`kubernetes-models: ${checked} objects valid, ${failures} failed`);
process.exit(failures ? 1 : 0);
