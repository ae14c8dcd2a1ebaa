"""IEC 60870-5-104 driver: the gateway as controlling station of an outstation (c104).

`codec` and `quality` are pure (no protocol library); `link` is the only module that
touches c104 and the only place its callbacks run; `driver` is the asyncio side.
"""
