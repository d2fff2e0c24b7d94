"""Model updates, the parts both sides share: keys and signatures (``trust``), desired-state
documents (``desired``), the chunked transfer (``transfer``), what a device remembers
(``state``) and probation (``probation``). The agent's ``updater`` drives them on a device;
``edge_runtime.fleet`` on the operator's side."""
