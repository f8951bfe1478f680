"""The discord.py cogs: chat, moderator ratings, admin commands.

With the modules beside this folder (app, command_tree, modlog), the only code that imports
discord."""
