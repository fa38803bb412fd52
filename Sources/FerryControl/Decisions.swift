// The control plane's pure decisions (placement, lease admission, scaling, telemetry) and the
// types they share (`Resources`, `ControlError`) live in FerryDecisions, which has no database
// and no I/O, so that simulators and benchmarks can link them alone. Code that imports
// FerryControl sees them as before.
@_exported import FerryDecisions
