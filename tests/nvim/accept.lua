-- Driven by tests/test_neovim_plugin.py: open a file, type in insert mode, wait for the plugin's
-- suggestion, accept it with the accept key, and write what happened to $LIVEFIM_NVIM_OUT.
-- Keys are fed to Neovim's own input loop (no "x" flag): the steps below run on timers in between,
-- so insert mode, TextChangedI and the <Tab> mapping behave as when a person types.
local out_path = os.getenv("LIVEFIM_NVIM_OUT")
local livefim = require("livefim")

local function finish(result)
  local f = io.open(out_path, "w")
  f:write(vim.fn.json_encode(result))
  f:close()
  vim.cmd("qa!")
end

-- poll `ready` every 50 ms until it returns true, then run `next`; give up after `limit_ms`
local function when(ready, limit_ms, next, failure)
  local waited = 0
  local function tick()
    local ok, value = pcall(ready)
    if ok and value then
      local ran, err = pcall(next)
      if not ran then
        finish({ error = tostring(err) })
      end
    elseif waited >= limit_ms then
      finish({ error = failure })
    else
      waited = waited + 50
      vim.defer_fn(tick, 50)
    end
  end
  vim.defer_fn(tick, 50)
end

local function keys(text)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(text, true, false, true), "t", false)
end

local result = {}
livefim.setup({
  cmd = vim.fn.json_decode(os.getenv("LIVEFIM_NVIM_CMD")),
  settings = vim.fn.json_decode(os.getenv("LIVEFIM_NVIM_SETTINGS")),
})
vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("LIVEFIM_NVIM_FILE")))

when(function()
  local c = livefim._client()
  return c ~= nil and c.initialized and vim.lsp.buf_is_attached(0, c.id)
end, 120000, function()
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  keys("a" .. os.getenv("LIVEFIM_NVIM_TYPE")) -- typed: each key is a change the plugin reacts to
  when(function() return livefim.current() ~= nil and vim.api.nvim_get_mode().mode == "i" end, 240000, function()
    result.typed = vim.api.nvim_buf_get_lines(0, 0, -1, false)
    result.cursor = vim.api.nvim_win_get_cursor(0)
    result.suggestion = livefim.current().text
    result.extmarks = #vim.api.nvim_buf_get_extmarks(0, vim.api.nvim_create_namespace("livefim"), 0, -1, {})
    local accepted = livefim.current()
    keys("<Tab>")
    -- Accepting changes the buffer, and that change asks for the next suggestion: a fast model can
    -- show one before the next poll, so wait for the insertion rather than for an empty screen.
    when(function() return not vim.deep_equal(vim.api.nvim_buf_get_lines(0, 0, -1, false), result.typed) end, 10000, function()
      result.after = vim.api.nvim_buf_get_lines(0, 0, -1, false)
      local now = livefim.current()
      result.shown_after_accept = now ~= nil and now.id == accepted.id and now.text == accepted.text
      finish(result)
    end, "the suggestion was not accepted")
  end, "no suggestion arrived")
end, "the livefim client never attached")
