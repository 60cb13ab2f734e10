"""The daily run: the layer above the step packages. It lists the steps and the role each runs
as, opens the warehouse and sets up its roles once, and hands every step its `RunContext`."""
