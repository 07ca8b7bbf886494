/**
 * The supervisor's secrets service: what it adds to the boot config (valid for the channel's
 * schema), what it shows in `status` (names only), and that it wipes the values when the boot ends.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { parseBootConfig } from "../../src/channel/boot-config.ts";
import { planSecretDelivery } from "../../src/secrets/delivery.ts";
import { isPlaceholder } from "../../src/secrets/placeholder.ts";
import { parseSecretRef } from "../../src/secrets/ref.ts";
import { SecretValue } from "../../src/secrets/resolve.ts";
import { SecretsService } from "../../src/supervisor/secrets-service.ts";

const FILE_VALUE = `fv-${randomBytes(20).toString("hex")}`;
const SWAP_VALUE = `sv-${randomBytes(20).toString("hex")}`;

function plan() {
  return planSecretDelivery([
    { ref: parseSecretRef("API_KEY=env:X", { baseDir: "/" }), value: new SecretValue(Buffer.from(FILE_VALUE)) },
    { ref: parseSecretRef("GH_TOKEN=env:Y@api.github.com", { baseDir: "/" }), value: new SecretValue(Buffer.from(SWAP_VALUE)) },
  ]);
}

test("supervisor-secrets: bootConfig adds /run/secrets files and swap placeholders, and the channel accepts it", () => {
  const p = plan();
  const svc = new SecretsService(p);
  const cfg = svc.bootConfig({ argv: ["true"], env: ["A=1"] });
  const parsed = parseBootConfig(cfg);
  assert.deepEqual(parsed.secrets?.map((s) => s.name), ["API_KEY", "GH_TOKEN"]);
  assert.equal(Buffer.from(parsed.secrets![0]!.contentBase64, "base64").toString(), FILE_VALUE);
  const token = Buffer.from(parsed.secrets![1]!.contentBase64, "base64").toString();
  assert.ok(isPlaceholder(token), "a swap secret's file holds the placeholder");
  assert.deepEqual(parsed.env, ["A=1", `GH_TOKEN=${token}`]);
  assert.ok(!JSON.stringify(cfg).includes(SWAP_VALUE), "a swap value never goes to the guest");
  assert.equal(p.swap[0]!.token, token);
});

test("supervisor-secrets: describe names secrets and deliveries only; stop wipes every value", () => {
  const p = plan();
  const svc = new SecretsService(p);
  const d = JSON.stringify(svc.describe());
  assert.deepEqual(JSON.parse(d), { dir: "/run/secrets", secrets: [{ name: "API_KEY", delivery: "file", bytes: FILE_VALUE.length }, { name: "GH_TOKEN", delivery: "swap" }] });
  assert.ok(!d.includes(FILE_VALUE) && !d.includes(SWAP_VALUE) && !d.includes(p.swap[0]!.token));
  svc.stop();
  assert.ok(p.files[0]!.content.reveal().every((b) => b === 0));
  assert.ok(p.swap[0]!.value.reveal().every((b) => b === 0));
  assert.throws(() => svc.bootConfig({}), /already wiped/);
});
