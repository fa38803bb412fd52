// FerryTransport: placeholder until the module lands.
