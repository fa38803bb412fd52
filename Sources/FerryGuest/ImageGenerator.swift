import FerrySystem
import Glibc

/// Writes deterministic guest memory images: the same (size, mix, seed, page size) always gives a
/// byte-identical file. Zero pages are left as holes, so the file is sparse.
public enum ImageGenerator {
    /// Bytes generated and written per `pwrite` batch.
    static let chunkSize = 4 << 20

    /// The class `page` gets in an image generated with `mix` and `seed`.
    public static func pageClass(seed: UInt64, page: Int, mix: ImageMix) -> PageClass {
        PageContent.pageClass(seed: seed, page: UInt64(page), thresholds: .init(mix))
    }

    /// Creates the image file at `path`.
    ///
    /// - Parameters:
    ///   - size: image size in bytes, a positive multiple of `pageSize`.
    ///   - overwrite: replace an existing file; without it an existing file is an error.
    ///   - progress: called after each chunk (a few MiB) with the bytes done so far.
    public static func create(
        path: String, size: Int, mix: ImageMix, seed: UInt64, pageSize: Int,
        overwrite: Bool, progress: ((_ bytesDone: Int) -> Void)? = nil
    ) throws {
        try validatePageSize(pageSize)
        guard size > 0, size % pageSize == 0 else {
            throw GuestError(.invalidSize, "--size \(size): must be a positive multiple of the page size \(pageSize)")
        }
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (overwrite ? O_TRUNC : O_EXCL)
        let fd = try systemCall(
            "open(\(path))",
            hint: { err in
                err == .fileExists ? "the image exists; pass --force to overwrite it" : nil
            },
            { open(path, flags, 0o644) }
        )
        defer { close(fd) }
        do {
            try fill(fd: fd, path: path, size: size, mix: mix, seed: seed, pageSize: pageSize, progress: progress)
        } catch {
            unlink(path)  // a partial image is of no use
            throw error
        }
    }

    private static func fill(
        fd: Int32, path: String, size: Int, mix: ImageMix, seed: UInt64, pageSize: Int,
        progress: ((_ bytesDone: Int) -> Void)?
    ) throws(GuestError) {
        try systemCall("ftruncate(\(path), \(size))") { ftruncate(fd, off_t(size)) }

        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        let thresholds = PageContent.Thresholds(mix)
        let pagesPerChunk = chunkSize / pageSize
        let pageCount = size / pageSize
        var chunkFirst = 0
        while chunkFirst < pageCount {
            let chunkPages = min(pagesPerChunk, pageCount - chunkFirst)
            var runStart = -1  // first page (index in chunk) of the current run of non-zero pages
            for i in 0...chunkPages {
                let isData: Bool
                if i < chunkPages {
                    let page = UInt64(chunkFirst + i)
                    let p = buffer + i * pageSize
                    switch PageContent.pageClass(seed: seed, page: page, thresholds: thresholds) {
                    case .zero: isData = false
                    case .sparse:
                        PageContent.fillSparse(p, pageSize: pageSize, seed: seed, page: page)
                        isData = true
                    case .text:
                        PageContent.fillText(p, pageSize: pageSize, seed: seed, page: page)
                        isData = true
                    case .random:
                        PageContent.fillRandom(p, pageSize: pageSize, seed: seed, page: page)
                        isData = true
                    }
                } else {
                    isData = false
                }
                if isData, runStart < 0 { runStart = i }
                if !isData, runStart >= 0 {
                    try writeAll(
                        fd: fd, path: path, buffer + runStart * pageSize,
                        count: (i - runStart) * pageSize, offset: (chunkFirst + runStart) * pageSize)
                    runStart = -1
                }
            }
            chunkFirst += chunkPages
            progress?(chunkFirst * pageSize)
        }
    }

    /// `pwrite` until all `count` bytes are written.
    static func writeAll(fd: Int32, path: String, _ p: UnsafeRawPointer, count: Int, offset: Int) throws(GuestError) {
        var done = 0
        while done < count {
            let n = try systemCall("pwrite(\(path), \(count - done) bytes at \(offset + done))") {
                pwrite(fd, p + done, count - done, off_t(offset + done))
            }
            done += n
        }
    }
}

/// Checks a page size against the protocol's limits: a power of two from 4096 to 65536.
func validatePageSize(_ pageSize: Int) throws(GuestError) {
    guard pageSize >= 4096, pageSize <= 65536, pageSize & (pageSize - 1) == 0 else {
        throw GuestError(.invalidConfiguration, "page size \(pageSize): must be a power of two from 4096 to 65536")
    }
}
