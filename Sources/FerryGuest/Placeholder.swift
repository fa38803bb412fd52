// FerryGuest: placeholder until the module lands.
