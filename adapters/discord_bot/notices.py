"""What the bot itself says in private-thread mode (to the user, and to the moderators)."""

MOVED = (
    "To keep your details private, your message in <#{channel}> was moved to this private thread: only you "
    "and the support team can read it. Please continue here."
)
STILL_PUBLIC = (
    "Your message in <#{channel}> is still visible to everyone in that channel (this bot may not delete it): "
    "please delete it there yourself. The support team answers you here, in this private thread."
)
SECRET = (
    " It looks like it contains a recovery phrase or a private key: delete it right away, and treat that "
    "wallet as exposed. Support staff will never ask you for it."
)
ALERT = (
    "A message from <@{author}> looks like it contains a {what} and is public in a support channel; the bot "
    "cannot delete it (Manage Messages missing). Please delete it now: {url}"
)
