"""Stage 5, the common-law loop: the feedback store, precedents, versioned artefacts, the gate, updaters."""
