"""Scheduling: cron and interval math, schedules, and the scheduler that fires them."""
