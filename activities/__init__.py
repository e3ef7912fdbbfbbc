"""Every side effect signoff has, grouped by the external system it touches.

Workflows call these by *name* (the strings below) so workflow code never imports
third-party clients. Each module exposes its activities as methods of a class that receives
its client(s) in the constructor; `workers/registry.py` builds the list for the worker.

| name                 | module                | input → output                          |
|----------------------|-----------------------|-----------------------------------------|
| run_build            | activities/runner.py  | BuildRequest → BuildResult              |
| run_tests            | activities/runner.py  | TestRequest → TestSummary               |
| deploy               | activities/deploy     | DeployRequest → DeploymentState         |
| current_deployment   | activities/deploy     | TargetRequest → DeploymentState         |
| rollback             | activities/deploy     | RollbackRequest → DeploymentState       |
| verify_provenance    | activities/provenance | ProvenanceRequest → ProvenanceResult    |
| evaluate_policy      | activities/policy     | PolicyRequest → PolicyDecision          |
| run_analysis         | activities/prometheus | AnalysisRequest → Measurement           |
| load_directory       | activities/directory  | str (path) → DirectorySnapshot          |
| append_decision      | activities/audit      | DecisionInput → dict                    |
| append_decisions     | activities/audit      | list[DecisionInput] → list[dict]        |
| slack_gate_notice    | activities/slack      | GateNotice → ChatRef                    |
| slack_notify         | activities/slack      | NotifyRequest → ChatRef                 |
| jira_gate_notice     | activities/jira       | GateNotice → ChatRef                    |
| jira_open_incident   | activities/jira       | NotifyRequest → ChatRef                 |
| decide_agent_control | activities/agents     | dict (request) → dict (denials)         |
| set_agent_standing   | activities/agents     | AgentStandingChange → dict (previous)   |
| agent_standing       | activities/agents     | str (agent id) → dict                   |
| running_releases_of_agent | activities/agents | str (agent id) → list[str]             |
| agent_usage          | activities/agents     | dict → dict (usage and budgets)         |
| check_drift          | activities/drift      | str → list[dict] (findings)             |
| keep_forensics       | activities/forensics  | dict → list[dict] (snapshot summaries)  |
"""
