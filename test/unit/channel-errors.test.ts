import { test } from "node:test";
import assert from "node:assert/strict";
import { ChannelErrors } from "../../src/channel/errors.ts";
import { definedErrorCodes } from "../../src/contract/errors.ts";

const EXPECTED: Record<string, { kind: string; retryable: boolean }> = {
  CHANNEL_PEER_CLOSED: { kind: "transient", retryable: true },
  CHANNEL_PROTOCOL_VIOLATION: { kind: "permanent", retryable: false },
  CHANNEL_INCOMPATIBLE_VERSION: { kind: "unsupported", retryable: false },
  CHANNEL_TIMEOUT: { kind: "transient", retryable: true },
  CHANNEL_CLOSED: { kind: "conflict", retryable: false },
  CHANNEL_CONNECT_FAILED: { kind: "transient", retryable: true },
  CHANNEL_BOOT_FAILED: { kind: "permanent", retryable: false },
  CHANNEL_GUEST_ERROR: { kind: "permanent", retryable: false },
  CHANNEL_TOO_MANY_STREAMS: { kind: "transient", retryable: true },
};

test("channel errors: every code has its kind, retryability and a remediation", () => {
  assert.deepEqual(Object.keys(ChannelErrors).sort(), Object.keys(EXPECTED).sort());
  for (const [code, want] of Object.entries(EXPECTED)) {
    const make = ChannelErrors[code as keyof typeof ChannelErrors];
    const e = make({ message: `m-${code}` });
    assert.equal(e.code, code);
    assert.equal(e.kind, want.kind, code);
    assert.equal(e.retryable, want.retryable, code);
    assert.equal(e.message, `m-${code}`);
    assert.ok(e.remediation.length > 20, `${code} has a remediation`);
    assert.equal(definedErrorCodes().get(code)?.kind, want.kind);
    const json = e.toJSON();
    assert.equal(json.code, code);
    assert.ok(json.correlation_id);
  }
});
