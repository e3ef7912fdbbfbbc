"""Slack: the Bolt app for approvals and chatops (`app.py`), Block Kit rendering (`blocks.py`),
`/signoff` subcommands (`commands.py`), settings (`config.py`) and the approver directory view
Slack needs (`directory.py`). The gateway mounts `slack_routes(build_slack_app(...))`."""
