"""The discord.py cogs: chat, moderator ratings, admin commands.

With bot/frontends/discord/app.py, the only code that imports discord."""
