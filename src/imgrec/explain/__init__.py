"""Why did the model say that, and which explanation can be trusted: attribution methods (captum) on models
of imgrec.hub, their faithfulness (deletion/insertion, infidelity, sensitivity) and the randomization sanity check."""
