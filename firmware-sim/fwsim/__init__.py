"""Field device simulators: DER physics in simulated time plus one front end per protocol."""
