"""oca-fill: the fill planner batch job, the backbone model and the fill agent."""
