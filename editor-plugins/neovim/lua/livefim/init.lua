-- livefim for Neovim 0.7+: starts `livefim lsp`, shows its inline suggestions as virtual text,
-- accepts and cycles them with keys, and tells the server what was shown, accepted and dismissed.
--
-- Neovim 0.7 has no inline completion of its own, so this plugin sends
-- textDocument/inlineCompletion itself after each change in insert mode (the server
-- debounces and cancels superseded requests) and draws the answer with extmarks:
-- the first line as virt_text at the cursor, the rest as virt_lines below it.

local M = {}

local ns = vim.api.nvim_create_namespace("livefim")

local defaults = {
  cmd = { "livefim", "lsp" },
  filetypes = nil, -- nil: every buffer with a file name; else a list such as { "python", "lua" }
  keys = { accept = "<Tab>", next = "<M-]>", prev = "<M-[>", dismiss = "<C-]>" },
  settings = {}, -- the `livefim` settings section (engine, model, maxLines, debounceMs, telemetry...)
  hl_group = "Comment",
}

M.config = vim.deepcopy(defaults)

-- per buffer: { items = {...}, index = n, row = r, col = c (bytes), changedtick = t, extmark = id }
local state = {}
local client_id = nil
local pending = {} -- bufnr -> request id in flight

local function client()
  return client_id and vim.lsp.get_client_by_id(client_id) or nil
end

local function notify(method, params)
  local c = client()
  if c then
    c.notify(method, params)
  end
end

local function item_id(item)
  local command = item and item.command
  if command and command.arguments and type(command.arguments[1]) == "string" then
    return command.arguments[1]
  end
  return nil
end

local function clear(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
end

--- The suggestion on screen in `bufnr`, if any: { text = ..., id = ... }.
function M.current(bufnr)
  local s = state[bufnr or vim.api.nvim_get_current_buf()]
  if not s or not s.items[s.index] then
    return nil
  end
  local item = s.items[s.index]
  local text = type(item.insertText) == "table" and item.insertText.value or item.insertText
  return { text = text, id = item_id(item), index = s.index, count = #s.items }
end

local function render(bufnr)
  clear(bufnr)
  local s = state[bufnr]
  local shown = M.current(bufnr)
  if not s or not shown or shown.text == "" then
    return
  end
  local lines = vim.split(shown.text, "\n", { plain = true })
  local line_text = vim.api.nvim_buf_get_lines(bufnr, s.row, s.row + 1, false)[1] or ""
  local at_end = s.col >= #line_text
  local opts = {
    virt_text = { { lines[1], M.config.hl_group } },
    virt_text_pos = at_end and "overlay" or "eol",
    hl_mode = "combine",
  }
  if #lines > 1 then
    local virt_lines = {}
    for i = 2, #lines do
      table.insert(virt_lines, { { lines[i], M.config.hl_group } })
    end
    opts.virt_lines = virt_lines
  end
  s.extmark = vim.api.nvim_buf_set_extmark(bufnr, ns, s.row, s.col, opts)
  if shown.id and not s.reported[shown.id] then
    s.reported[shown.id] = true
    notify("livefim/didShow", { id = shown.id })
  end
end

--- Dismiss the suggestion on screen (reported as rejected).
function M.dismiss(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local shown = M.current(bufnr)
  if shown and shown.id then
    notify("livefim/didReject", { id = shown.id })
  end
  state[bufnr] = nil
  clear(bufnr)
end

--- Insert the suggestion on screen at the cursor; returns true when there was one.
function M.accept(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local s = state[bufnr]
  local shown = M.current(bufnr)
  if not s or not shown or shown.text == "" then
    return false
  end
  state[bufnr] = nil
  clear(bufnr)
  local lines = vim.split(shown.text, "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, s.row, s.col, s.row, s.col, lines)
  local last_row = s.row + #lines - 1
  local last_col = (#lines == 1 and s.col or 0) + #lines[#lines]
  if bufnr == vim.api.nvim_get_current_buf() then
    vim.api.nvim_win_set_cursor(0, { last_row + 1, last_col })
  end
  if shown.id then
    notify("livefim/didAccept", { id = shown.id, acceptedLength = vim.fn.strchars(shown.text) })
  end
  return true
end

local function request(bufnr, invoked)
  local c = client()
  if not c or not vim.lsp.buf_is_attached(bufnr, c.id) then
    return
  end
  if pending[bufnr] then
    c.cancel_request(pending[bufnr])
    pending[bufnr] = nil
  end
  local params = vim.lsp.util.make_position_params()
  params.context = { triggerKind = invoked and 1 or 2 } -- 1 Invoked, 2 Automatic
  local cursor = vim.api.nvim_win_get_cursor(0)
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local ok, id = c.request("textDocument/inlineCompletion", params, function(err, result)
    pending[bufnr] = nil
    if err or not result then
      return
    end
    local now = vim.api.nvim_win_get_cursor(0)
    if vim.api.nvim_buf_get_changedtick(bufnr) ~= tick or now[1] ~= cursor[1] or now[2] ~= cursor[2] then
      return -- the user moved on: the server has a newer request
    end
    local items = result.items or result
    if #items == 0 then
      return
    end
    local previous = state[bufnr]
    state[bufnr] = { items = items, index = 1, row = cursor[1] - 1, col = cursor[2], tick = tick,
                     reported = previous and previous.reported or {} }
    render(bufnr)
  end, bufnr)
  if ok then
    pending[bufnr] = id
  end
end

--- Ask for a suggestion at the cursor now (invoked = true asks for alternatives to cycle through).
function M.trigger(invoked)
  request(vim.api.nvim_get_current_buf(), invoked)
end

--- Show the next (step 1) or previous (step -1) alternative, asking for alternatives first if needed.
function M.cycle(step)
  local bufnr = vim.api.nvim_get_current_buf()
  local s = state[bufnr]
  if not s or #s.items < 2 then
    request(bufnr, true)
    return
  end
  s.index = ((s.index - 1 + step) % #s.items) + 1
  render(bufnr)
end

local function wanted(bufnr)
  if vim.api.nvim_buf_get_name(bufnr) == "" or vim.bo[bufnr].buftype ~= "" then
    return false
  end
  local filetypes = M.config.filetypes
  return filetypes == nil or vim.tbl_contains(filetypes, vim.bo[bufnr].filetype)
end

local function attach(bufnr)
  if not wanted(bufnr) then
    return
  end
  if not client_id then
    client_id = vim.lsp.start_client({
      name = "livefim",
      cmd = M.config.cmd,
      root_dir = vim.fn.getcwd(),
      init_options = M.config.settings,
      settings = { livefim = M.config.settings },
      flags = { debounce_text_changes = 0 }, -- every keystroke reaches the server before the request after it
      on_exit = function()
        client_id = nil
      end,
    })
  end
  if client_id then
    vim.lsp.buf_attach_client(bufnr, client_id)
  end
end

local function map_keys()
  local keys = M.config.keys
  if keys.accept then
    vim.keymap.set("i", keys.accept, function()
      if M.current() then
        vim.schedule(function() M.accept() end) -- an expr mapping may not change the buffer itself
        return ""
      end
      return vim.api.nvim_replace_termcodes(keys.accept, true, false, true)
    end, { expr = true, silent = true, desc = "livefim: accept the suggestion" })
  end
  if keys.next then
    vim.keymap.set("i", keys.next, function() M.cycle(1) end, { silent = true, desc = "livefim: next suggestion" })
  end
  if keys.prev then
    vim.keymap.set("i", keys.prev, function() M.cycle(-1) end, { silent = true, desc = "livefim: previous suggestion" })
  end
  if keys.dismiss then
    vim.keymap.set("i", keys.dismiss, function() M.dismiss() end, { silent = true, desc = "livefim: dismiss the suggestion" })
  end
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  local group = vim.api.nvim_create_augroup("livefim", { clear = true })
  vim.api.nvim_create_autocmd({ "BufEnter", "FileType" }, {
    group = group,
    callback = function(args) attach(args.buf) end,
  })
  vim.api.nvim_create_autocmd("TextChangedI", {
    group = group,
    callback = function(args)
      local s = state[args.buf]
      if s then
        clear(args.buf)
        state[args.buf] = nil -- typed-ahead: the server answers the next request at once if it still fits
      end
      request(args.buf, false)
    end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    callback = function(args) M.dismiss(args.buf) end,
  })
  map_keys()
  attach(vim.api.nvim_get_current_buf())
end

M._client = client
return M
