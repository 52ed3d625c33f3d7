"""GSLB servers that agree: the servers of one NS set vote on region health and share drains.

    config.py       [pure]  the `peers:` config section (PeerSettings)
    vote.py         [pure]  verdicts in, voted state out (quorum / any_up / all_up)
    admin_state.py  [pure]  drain / maintenance entries, last writer wins; [edge] load / save the
                            admin state file atomically
    node.py         [pure]  this server's peers' reports, ballots and admin entries together
    sync.py         [edge]  the aiohttp client: pulls verdicts, pushes drains, pulls latency tables

Exceptions (each translated where it enters):

    ValueError
        ReportError        a peer's verdicts reply is malformed (vote.py)
    ConfigError
        StateFileError     the admin state file cannot be read or is invalid (admin_state.py)
    PeerError              a peer did not answer as a GSLB server does (sync.py)
"""
