"""The scheduler: fires cron schedules and only dispatches commands; workers do the work."""
