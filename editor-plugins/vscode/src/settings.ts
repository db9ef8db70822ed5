// The `livefim` configuration section as the language server's initializationOptions
// (the same keys as its workspace/configuration section: lsp/settings.py). No `vscode`
// import here, so the unit tests run under plain node.

export type Get = (key: string) => unknown;

export interface InitializationOptions {
  engine?: string;
  model?: string | null;
  maxLines?: number;
  debounceMs?: number | null;
  telemetry: { enabled: boolean; shareCode: boolean; store?: string | null };
  experimentsFile?: string | null;
  completionItems: false; // we show inline suggestions; a completion menu item would repeat them
}

export function initializationOptions(get: Get): InitializationOptions {
  const options: InitializationOptions = {
    telemetry: {
      enabled: get("telemetry.enabled") !== false,
      shareCode: get("telemetry.shareCode") === true,
    },
    completionItems: false,
  };
  const engine = get("engine");
  if (typeof engine === "string" && engine.trim() !== "") {
    options.engine = engine.trim();
  }
  const model = get("model");
  if (typeof model === "string" && model !== "") {
    options.model = model;
  }
  const maxLines = get("maxLines");
  if (typeof maxLines === "number" && Number.isInteger(maxLines)) {
    options.maxLines = maxLines;
  }
  const debounce = get("debounceMs");
  if (typeof debounce === "number" || debounce === null) {
    options.debounceMs = debounce;
  }
  const store = get("telemetry.store");
  if (typeof store === "string" && store !== "") {
    options.telemetry.store = store;
  }
  const experiments = get("experimentsFile");
  if (typeof experiments === "string" && experiments !== "") {
    options.experimentsFile = experiments;
  }
  return options;
}

export function serverCommand(get: Get): { command: string; args: string[] } {
  const path = get("path");
  return { command: typeof path === "string" && path.trim() !== "" ? path.trim() : "livefim", args: ["lsp"] };
}
