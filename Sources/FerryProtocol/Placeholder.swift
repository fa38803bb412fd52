// FerryProtocol: placeholder until the module lands.
