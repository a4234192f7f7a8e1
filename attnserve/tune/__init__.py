"""`attnserve tune NAME`: the serving configuration of a model chosen by measurement under a latency SLO.

It orchestrates the other packages (like the demo, nothing imports it): candidate configurations
(`candidates`) are loaded into a real Triton through model control with a config override (`control`),
each is measured with the project's load tester (`search`), the results are written as JSON, CSV and a PNG
(`report`), and the winner is written into the model's repository entry through the export package's
config generator (`apply`), so `attnserve serve` serves it.
"""
