"""oca-fill: the fill planner, a nightly batch job of the control plane.

From the catalog, the appliances' access logs and the fleet topology it computes what
every appliance and backbone node holds tomorrow and how the additions get there, and
writes one fill manifest per node (DESIGN.md, "Fill manifest"). The stages, each a module
(model.py draws what each hands to the next):

    catalog.py, logs.py, topology.py   read the inputs
    forecast.py                        what holding each object at each site is worth
    rendezvous.py, placement.py        which appliance holds which object, on which tier
    backbone.py                        sources, routes, waves and link budgets tonight
    manifest.py                        write tonight's manifests, read last night's
    plan.py, summary.py, cli.py        `oca-fill plan`: the whole run, its summary, the CLI
    simulate.py, trace.py              `oca-fill simulate`: replay a trace against a plan

loops.py chooses the compiled inner loops (fill/_greedy.pyx) or their numpy twins. The
fill agent that applies the manifests on an appliance (`oca fill apply`) is not part of
this package: it lives in a package of its own (DESIGN.md, "Top-level layout").
"""
