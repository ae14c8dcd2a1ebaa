"""The fault suite: simulators killed and restarted, field links cut in a network
namespace, devices that never answer, answer garbage or answer late, hostile config and
mapping files, hostile inbound messages at the northbound endpoints, the gateway process
SIGKILLed at points of a CRP cycle. `make test` runs the quick form (3 restarts per
simulator, 2 link cuts, a hundred examples per fuzz property, 3,000 hostile messages, one
CRP cycle with 5 kills); `MGMS_LONG_FAULTS=1` runs the long one (10 restarts and 10 cuts,
thousands of examples, 12,000 hostile messages, 8 more CRP cycles with about 25 more
kills). Northbound (test_north_faults.py): the AMS away for a simulated day (3 days long),
the MQTT broker killed under traffic 3 times (10), TLS failures both ways."""
