-- livefim: nothing starts until you call require("livefim").setup({...}) (see README.md).
vim.api.nvim_create_user_command("LivefimTrigger", function() require("livefim").trigger(true) end,
  { desc = "livefim: ask for suggestions at the cursor" })
