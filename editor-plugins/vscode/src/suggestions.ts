// What the server's textDocument/inlineCompletion answer holds, in editor-neutral terms, and
// which suggestions have been reported as shown. No `vscode` import: unit-tested under node.

export interface LspPosition { line: number; character: number }
export interface LspRange { start: LspPosition; end: LspPosition }

export interface Suggestion {
  text: string;
  id?: string; // the server's suggestion id, carried as the first argument of the item's command
  range?: LspRange;
}

export const ACCEPT_COMMAND = "livefim.accept";

/** The items of an InlineCompletionList (or a bare item array), skipping anything malformed. */
export function parseInlineResult(result: unknown): Suggestion[] {
  const items = Array.isArray(result) ? result : (result as { items?: unknown })?.items;
  if (!Array.isArray(items)) {
    return [];
  }
  const out: Suggestion[] = [];
  for (const raw of items) {
    const item = raw as { insertText?: unknown; range?: LspRange; command?: { command?: string; arguments?: unknown[] } };
    const text = typeof item.insertText === "string" ? item.insertText
      : (item.insertText as { value?: unknown })?.value;
    if (typeof text !== "string" || text === "") {
      continue;
    }
    const suggestion: Suggestion = { text };
    const args = item.command?.command === ACCEPT_COMMAND ? item.command.arguments : undefined;
    if (args && typeof args[0] === "string") {
      suggestion.id = args[0];
    }
    if (item.range) {
      suggestion.range = item.range;
    }
    out.push(suggestion);
  }
  return out;
}

/** Reports each suggestion id as shown once: re-shows (typed-ahead keeps the id) are not new suggestions. */
export class ShownTracker {
  private readonly shown = new Set<string>();
  private readonly order: string[] = [];

  constructor(private readonly report: (id: string) => void, private readonly limit = 10000) {}

  shownNow(id: string | undefined): boolean {
    if (!id || this.shown.has(id)) {
      return false;
    }
    this.shown.add(id);
    this.order.push(id);
    if (this.order.length > this.limit) {
      this.shown.delete(this.order.shift() as string);
    }
    this.report(id);
    return true;
  }
}
