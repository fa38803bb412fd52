import FerryCodec
import FerrySystem
import Glibc

// Microbenchmarks of Ferry's hot paths; see Tools/microbench/README.md.

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
let started = Clock.now()

func emit(_ text: String) { Output.out(text) }

emit("""
    microbench: \(Machine.summary)
    median of \(options.repetitions) repetitions (min–max), wall time (CLOCK_MONOTONIC), one thread; GB = 10^9 bytes of guest memory
    cpu% = this thread's CPU time / wall time: well under 100 means other load took the CPU and the rates are low for it
    """)

var ranAny = false
do {
    let imageNames = ["standard", "zero", "sparse", "text", "random"]
    let codecLabels = CodecBenchmarks.labels + [BatchBenchmarks.label]
    if options.selectsAny(imageNames.flatMap { image in codecLabels.map { "\($0) \(image)" } }) {
        ranAny = true
        let images = try TestImage.all(pageCount: options.imagePages, pageSize: systemPageSize)
        emit("""

            Codec: images from ImageGenerator (seed \(TestImage.seed), \(options.imagePages) pages = \
            \((options.imagePages * systemPageSize) >> 20) MiB each, in faulted-in anonymous memory); standard = \(images[0].mix)
            """)
        var codec = CodecBenchmarks(options: options)
        for image in images { try codec.run(on: image) }
        if !codec.table.rows.isEmpty { emit("\n" + codec.table.render()) }

        var batch = BatchBenchmarks(options: options)
        for image in images where options.selects("\(BatchBenchmarks.label) \(image.name)") {
            try batch.run(on: EncodedImage(image, mode: .lz4))
        }
        if !batch.table.rows.isEmpty { emit(batch.table.render()) }
    }

    if options.selectsAny(HarvestBenchmarks.kinds.flatMap { kind in
        HarvestBenchmarks.percentages.map { HarvestBenchmarks.label(kind, $0) } }) {
        emit("""

            Dirty tracking: anonymous region of \(options.pages) pages (\((options.pages * systemPageSize) >> 20) MiB), \
            faulted in; per repetition a writer stores into each listed page (ascending), then one harvest
            """)
        ranAny = true
        var harvest = HarvestBenchmarks(options: options)
        try harvest.run()
        emit("\n" + harvest.table.render())
        for note in harvest.notes { emit(note) }
    }
} catch {
    Output.error("microbench: \(error)")
    exit(1)
}

if !ranAny { Output.error("microbench: no benchmark label contains \(options.filters); see --help") }
emit("total \(fixed(Clock.seconds(since: started), 1)) s")
