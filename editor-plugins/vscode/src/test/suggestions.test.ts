import { strict as assert } from "node:assert";
import { test } from "node:test";

import { ShownTracker, parseInlineResult } from "../suggestions";

const at = { start: { line: 1, character: 11 }, end: { line: 1, character: 11 } };

test("items keep their text, range and the suggestion id from the accept command", () => {
  const parsed = parseInlineResult({
    items: [
      { insertText: "a + b", range: at, command: { title: "t", command: "livefim.accept", arguments: ["s-1"] } },
      { insertText: { kind: "snippet", value: "a - b" } },
      { insertText: "" },
      { nothing: true },
    ],
  });
  assert.deepEqual(parsed, [{ text: "a + b", id: "s-1", range: at }, { text: "a - b" }]);
});

test("another command's arguments are not taken for an id; junk answers give no items", () => {
  assert.deepEqual(parseInlineResult([{ insertText: "x", command: { command: "other", arguments: ["s-9"] } }]), [{ text: "x" }]);
  assert.deepEqual(parseInlineResult(null), []);
  assert.deepEqual(parseInlineResult({ items: "nope" }), []);
});

test("each id is reported shown once", () => {
  const reported: string[] = [];
  const tracker = new ShownTracker((id) => reported.push(id), 2);
  assert.equal(tracker.shownNow("a"), true);
  assert.equal(tracker.shownNow("a"), false); // typed-ahead re-show: same suggestion
  tracker.shownNow(undefined);
  tracker.shownNow("b");
  tracker.shownNow("c"); // past the limit the oldest is forgotten
  tracker.shownNow("a");
  assert.deepEqual(reported, ["a", "b", "c", "a"]);
});
