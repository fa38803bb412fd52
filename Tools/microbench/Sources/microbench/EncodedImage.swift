import FerryCodec
import FerryProtocol

/// Every page of a `TestImage` encoded once, as the destination would receive them: payloads
/// back to back in one buffer, plus each page's encoding, payload position and hash.
final class EncodedImage {
    let image: TestImage
    let mode: CompressionMode
    let stream: UnsafeMutableRawPointer
    private(set) var encodings: [PageEncoding] = []
    private(set) var offsets: [Int] = []
    private(set) var lengths: [Int] = []
    private(set) var hashes: [UInt64] = []
    private(set) var payloadBytes = 0

    init(_ image: TestImage, mode: CompressionMode, acceleration: Int32 = 1) {
        self.image = image
        self.mode = mode
        stream = .allocate(byteCount: image.byteCount, alignment: 64)
        let encoder = PageEncoder(pageSize: image.pageSize, mode: mode, acceleration: acceleration)
        encodings.reserveCapacity(image.pageCount)
        offsets.reserveCapacity(image.pageCount)
        lengths.reserveCapacity(image.pageCount)
        hashes.reserveCapacity(image.pageCount)
        for page in 0..<image.pageCount {
            let encoded = encoder.encode(page: image.base + page * image.pageSize, into: stream + payloadBytes)
            encodings.append(encoded.encoding)
            offsets.append(payloadBytes)
            lengths.append(encoded.length)
            hashes.append(encoded.hash)
            payloadBytes += encoded.length
        }
    }

    deinit { stream.deallocate() }

}
