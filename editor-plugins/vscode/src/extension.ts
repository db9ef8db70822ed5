// livefim for VS Code: starts `livefim lsp`, serves its suggestions through the inline completion
// API, and reports shown / accepted suggestions back to it (see editor-plugins/README.md).
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";

import { initializationOptions, serverCommand } from "./settings";
import { ShownTracker, parseInlineResult } from "./suggestions";

let client: LanguageClient | undefined;
const ACCEPTED = "livefim.accepted"; // our local command: VS Code runs an item's command when it is accepted

function configuration(): (key: string) => unknown {
  const config = vscode.workspace.getConfiguration("livefim");
  return (key: string) => config.get(key);
}

async function startClient(output: vscode.OutputChannel): Promise<LanguageClient> {
  const get = configuration();
  const { command, args } = serverCommand(get);
  const serverOptions: ServerOptions = { command, args };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: initializationOptions(get),
    synchronize: { configurationSection: "livefim" },
    outputChannel: output,
  };
  const started = new LanguageClient("livefim", "livefim", serverOptions, clientOptions);
  await started.start();
  return started;
}

class Provider implements vscode.InlineCompletionItemProvider {
  private readonly tracker = new ShownTracker((id) => {
    client?.sendNotification("livefim/didShow", { id }).catch(() => undefined);
  });

  async provideInlineCompletionItems(
    document: vscode.TextDocument,
    position: vscode.Position,
    context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionItem[]> {
    const active = client;
    if (!active) {
      return [];
    }
    const params = {
      textDocument: { uri: document.uri.toString() },
      position: { line: position.line, character: position.character },
      context: { triggerKind: context.triggerKind === vscode.InlineCompletionTriggerKind.Invoke ? 1 : 2 },
    };
    let result: unknown;
    try {
      result = await active.sendRequest("textDocument/inlineCompletion", params, token);
    } catch {
      return []; // cancelled (the server supersedes obsolete requests) or the server restarting
    }
    if (token.isCancellationRequested) {
      return [];
    }
    const suggestions = parseInlineResult(result);
    if (suggestions.length > 0) {
      // VS Code shows the first item; the others when the user cycles (reported on accept).
      this.tracker.shownNow(suggestions[0].id);
    }
    return suggestions.map((s) => {
      const range = s.range
        ? new vscode.Range(s.range.start.line, s.range.start.character, s.range.end.line, s.range.end.character)
        : new vscode.Range(position, position);
      const item = new vscode.InlineCompletionItem(s.text, range);
      if (s.id) {
        item.command = { title: "livefim: accepted", command: ACCEPTED, arguments: [s.id, s.text.length] };
      }
      return item;
    });
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel("livefim");
  context.subscriptions.push(output);
  try {
    client = await startClient(output);
  } catch (error) {
    vscode.window.showErrorMessage(`livefim: cannot start the language server (${String(error)}). Check the livefim.path setting.`);
  }
  context.subscriptions.push(
    vscode.languages.registerInlineCompletionItemProvider({ pattern: "**" }, new Provider()),
    vscode.commands.registerCommand(ACCEPTED, (id: string, length: number) => {
      client?.sendNotification("livefim/didAccept", { id, acceptedLength: length }).catch(() => undefined);
    }),
    vscode.commands.registerCommand("livefim.restart", async () => {
      await client?.stop();
      client = await startClient(output);
    }),
    vscode.commands.registerCommand("livefim.showLog", () => output.show()),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("livefim.path")) {
        await client?.stop();
        client = await startClient(output);
      }
    }),
  );
}

export async function deactivate(): Promise<void> {
  await client?.stop();
  client = undefined;
}
