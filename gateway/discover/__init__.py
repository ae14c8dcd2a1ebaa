"""Onboarding by discovery: read what a field device says about itself and write a draft
mapping file (`mgms discover`). One module per protocol; the protocol I/O lives in drivers/.
Nothing is ever written to a device during discovery."""
