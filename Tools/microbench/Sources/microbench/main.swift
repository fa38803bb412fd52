import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc

// Microbenchmarks of Ferry's hot paths; see Tools/microbench/README.md.

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
let started = Clock.now()

func emit(_ text: String) { Output.out(text) }

emit(
    """
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
        emit(
            """

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

    if options.selectsAny(
        HarvestBenchmarks.kinds.flatMap { kind in
            HarvestBenchmarks.percentages.map { HarvestBenchmarks.label(kind, $0) }
        })
    {
        emit(
            """

            Dirty tracking: anonymous region of \(options.pages) pages (\((options.pages * systemPageSize) >> 20) MiB), \
            faulted in; per repetition a writer stores into each listed page (ascending), then one harvest
            """)
        ranAny = true
        var harvest = HarvestBenchmarks(options: options)
        try harvest.run()
        emit("\n" + harvest.table.render())
        for note in harvest.notes { emit(note) }
    }

    if options.selectsAny(TrackerBenchmarks.labels) {
        ranAny = true
        emit(
            """

            Tracker overhead: \(options.pages) pages (\((options.pages * systemPageSize) >> 20) MiB) MAP_SHARED at \(options.trackerImage), \
            faulted in; \(options.trackerThreads) \(options.trackerRate.map { "guest writer thread(s) paced at \($0)" } ?? "unpaced writer thread(s)"), \(fixed(options.trackerSeconds, 1)) s measured per run \
            (after \(fixed(options.trackerWarmupMs, 0)) ms), harvest every \(fixed(options.harvestMs, 0)) ms while tracked, \
            \(options.trackerRepetitions) runs per variant alternating none/uffd/mprotect; median (min–max) over runs
            writer guest: FerryGuest vCPUs (16 bytes into a page per step); page: memset of the whole page per step. \
            MB/s = pages × \(systemPageSize) B / 10^6
            """)
        var tracker = TrackerBenchmarks(options: options)
        try tracker.run()
        emit("\n" + tracker.table.render())
        emit(
            """
            × none: median rate ÷ the untracked median of the same writer and pattern. found: pages the harvests reported \
            (each cost its writer one write fault); full: harvests that reported every page (every page written, or \
            mprotect's fallback past vm.max_map_count split pages). minflt/found: getrusage minor faults \
            (all threads) per found page (mprotect's SIGSEGV faults are not counted as minor faults). \
            ≈µs/found: writer time lost per tracked write fault = (1 − × none) × writers ÷ found pages/s \
            (with --tracker-rate: the writers' CPU beyond the untracked run's, ÷ found pages). \
            writer cpu%: process CPU minus this harvesting thread's, ÷ (wall × writers); writer CPU ns/page: the same CPU ÷ pages written
            """)
        for note in tracker.notes { emit(note) }
    }

    if options.selectsAny(RecordCipherBenchmarks.labels) {
        ranAny = true
        emit(
            """

            Record layer (--encrypt): \(RecordCipherBenchmarks.recordBytes >> 10) KiB records, \(RecordCipherBenchmarks.records) per repetition; \
            CPU AES instructions: \(RecordCipher.hasHardwareAES ? "yes" : "no"); GB = 10^9 bytes of plaintext
            """)
        var ciphers = RecordCipherBenchmarks(options: options)
        try ciphers.run()
        emit("\n" + ciphers.table.render())
    }

    if options.selectsAny(FrameReceiveBenchmarks.labels) {
        ranAny = true
        emit(
            """

            Frame receiving: PAGE_BATCH frames over loopback TCP, \(FrameReceiveBenchmarks.bytesPerRepetition >> 20) MiB of \
            payload per repetition, read by FramedConnection on this (timed) thread from a sender thread's large writes; \
            direct = receive(direct:) + readDirect of the batch header, table and pages (one vector per page, as PageSink); \
            copy = receive() into the connection's buffer. GB = 10^9 wire bytes; \
            CPU ns/frame = the receiving thread's CPU time (median repetition) per frame, less sensitive to other load than the rates
            """)
        var frames = FrameReceiveBenchmarks(options: options)
        try frames.run()
        emit("\n" + frames.table.render())
    }
} catch {
    Output.error("microbench: \(error)")
    exit(1)
}

if !ranAny { Output.error("microbench: no benchmark label contains \(options.filters); see --help") }
emit("total \(fixed(Clock.seconds(since: started), 1)) s")
