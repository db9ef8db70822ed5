import { strict as assert } from "node:assert";
import { test } from "node:test";

import { initializationOptions, serverCommand } from "../settings";

function from(values: Record<string, unknown>): (key: string) => unknown {
  return (key: string) => values[key];
}

test("defaults: embedded engine, telemetry on, no code shared, no completion menu", () => {
  assert.deepEqual(initializationOptions(from({})), {
    telemetry: { enabled: true, shareCode: false },
    completionItems: false,
  });
});

test("settings map to the server's keys; blanks and wrong types are left out", () => {
  const options = initializationOptions(from({
    engine: " 10.0.0.5:50051 ", model: "qwen2.5-coder-1.5b", maxLines: 4, debounceMs: null,
    "telemetry.enabled": false, "telemetry.shareCode": true, "telemetry.store": "redis://r:6379/0",
    experimentsFile: "/etc/livefim/experiments.toml",
  }));
  assert.deepEqual(options, {
    engine: "10.0.0.5:50051", model: "qwen2.5-coder-1.5b", maxLines: 4, debounceMs: null,
    telemetry: { enabled: false, shareCode: true, store: "redis://r:6379/0" },
    experimentsFile: "/etc/livefim/experiments.toml", completionItems: false,
  });
  const odd = initializationOptions(from({ engine: "", maxLines: 2.5, model: 7 }));
  assert.equal(odd.engine, undefined);
  assert.equal(odd.maxLines, undefined);
  assert.equal(odd.model, undefined);
});

test("the server command comes from livefim.path", () => {
  assert.deepEqual(serverCommand(from({})), { command: "livefim", args: ["lsp"] });
  assert.deepEqual(serverCommand(from({ path: "/opt/livefim/.venv/bin/livefim" })), { command: "/opt/livefim/.venv/bin/livefim", args: ["lsp"] });
});
