import FerrySystem

/// The locks a destination holds on one guest's image (`ImageLock`): `PATH.partial`, created
/// empty when missing (never truncated here), and `PATH` when it exists (an image `--force`
/// overwrites). Taken before anything is created, truncated or written; when the partial image
/// is renamed to `PATH` its lock goes with it, so the guest running here keeps `PATH` locked.
/// A single-guest agent (`DestinationAgent`) holds them from `bind()` to the end of `run()`; a
/// serving agent (`DestinationServer`) per migration, from its image's creation to its end.
final class DestinationImageLocks: Sendable {
    let imagePath: String
    let partial: ImageLock
    let image: ImageLock?

    private init(imagePath: String, partial: ImageLock, image: ImageLock?) {
        self.imagePath = imagePath
        self.partial = partial
        self.image = image
    }

    /// Locks `imagePath.partial` and `imagePath`; throws the `.locked` `SystemError` naming the
    /// holder when another agent uses either (exit code 9 in the CLI).
    static func acquire(imagePath: String) throws(SystemError) -> DestinationImageLocks {
        let partial = try ImageLock.acquire(path: imagePath + ".partial", create: true)
        do throws(SystemError) {
            var image: ImageLock?
            if ImageFile.exists(path: imagePath) {
                do throws(SystemError) {
                    image = try ImageLock.acquire(path: imagePath)
                } catch  where error.errno == .noSuchFileOrDirectory {
                    image = nil  // removed meanwhile: nothing to protect
                }
            }
            return DestinationImageLocks(imagePath: imagePath, partial: partial, image: image)
        } catch {
            partial.release(removingFile: partial.createdFile)
            throw error
        }
    }

    /// The refusal for a source whose image another agent holds, or nil (takes no lock).
    static func conflict(imagePath: String) -> String? {
        (ImageLock.conflict(path: imagePath + ".partial") ?? ImageLock.conflict(path: imagePath))?.detail
    }

    /// The partial image was renamed to `PATH`: its lock now covers `PATH`.
    func renamed() {
        partial.moved(to: imagePath)
    }

    /// Gives both locks up; a partial image that was never renamed to `PATH` (still empty, or
    /// left by a failed migration) is removed with its lock.
    func release() {
        image?.release()
        partial.release(removingFile: partial.path != imagePath)
    }
}
