"""peach-scheduler: keeps every organisation's data-science tasks running, one loop per organisation."""
