import FerryHostModel
import Foundation

/// An auto-scaling group (issue 17's dynamic provisioning): guests of one flavor and image whose
/// number the controller keeps at `desired`, which its policy moves within `[min, max]` from the
/// members' telemetry (`GroupScaler`). Every change of `desired` is journaled with its reason
/// (`ScalingAction`, the group's timeline). A deleted group's members are stopped and deleted.
public struct ScalingGroup: Sendable, Equatable {
    public var id: String
    public var project: String
    /// Unique among the project's groups; its members are named `NAME-N`.
    public var name: String
    public var flavor: String
    public var image: String
    public var min: Int
    public var max: Int
    public var desired: Int
    /// Warm capacity: members kept suspended beyond the `desired` running ones (booted, then
    /// suspended), resumed first on a scale-out; 0 ≤ warm ≤ max. They hold capacity and quota.
    public var warm: Int
    public var policy: ScalingPolicy
    public var scaleIn: ScaleInOrder
    public var state: ScalingGroupState
    public var createdAt: Date
    /// When `desired` last changed (nil: never since the group was created).
    public var lastActionAt: Date?

    public init(
        id: String, project: String, name: String, flavor: String, image: String, min: Int, max: Int, desired: Int,
        policy: ScalingPolicy, scaleIn: ScaleInOrder, state: ScalingGroupState, createdAt: Date, lastActionAt: Date?,
        warm: Int = 0
    ) {
        self.id = id
        self.project = project
        self.name = name
        self.flavor = flavor
        self.image = image
        self.min = min
        self.max = max
        self.desired = desired
        self.warm = warm
        self.policy = policy
        self.scaleIn = scaleIn
        self.state = state
        self.createdAt = createdAt
        self.lastActionAt = lastActionAt
    }
}

public enum ScalingGroupState: String, Sendable, Codable {
    case active
    /// Given up: desired 0, its members are being removed; the row stays for its timeline.
    case deleted
}

/// Which members a scale-in removes first.
public enum ScaleInOrder: String, Sendable, Codable, CaseIterable {
    /// The most recently created.
    case newest
    /// The lowest mean metric over the policy's window (guests without samples first).
    case leastLoaded = "least_loaded"
}

/// What a group's policy measures, in percent: the CPU use of the members' vCPUs, or the load the
/// guests report (per mille ÷ 10).
public enum ScalingMetric: String, Sendable, Codable, CaseIterable {
    case cpu
    case load
}

/// A group's policy, without its bounds (the group's `min` and `max` are given when it decides:
/// `targetTracking(min:max:)`, `threshold(min:max:)`).
public enum ScalingPolicy: Sendable, Equatable, Codable {
    case targetTracking(TargetTrackingParameters)
    case threshold(ThresholdParameters)

    /// `TargetTracking`'s parameters; times in seconds on the wire.
    public struct TargetTrackingParameters: Sendable, Equatable, Codable {
        public var metric: ScalingMetric
        /// Percent.
        public var target: Double
        public var tolerance: Double
        public var metricWindowSeconds: Double
        public var scaleUpStabilisationSeconds: Double
        public var scaleDownStabilisationSeconds: Double

        public init(
            metric: ScalingMetric, target: Double, tolerance: Double = 0.1, metricWindowSeconds: Double = 15,
            scaleUpStabilisationSeconds: Double = 0, scaleDownStabilisationSeconds: Double = 300
        ) {
            self.metric = metric
            self.target = target
            self.tolerance = tolerance
            self.metricWindowSeconds = metricWindowSeconds
            self.scaleUpStabilisationSeconds = scaleUpStabilisationSeconds
            self.scaleDownStabilisationSeconds = scaleDownStabilisationSeconds
        }

        enum CodingKeys: String, CodingKey {
            case metric, target, tolerance
            case metricWindowSeconds = "metric_window_seconds"
            case scaleUpStabilisationSeconds = "scale_up_stabilisation_seconds"
            case scaleDownStabilisationSeconds = "scale_down_stabilisation_seconds"
        }

        public init(from decoder: any Decoder) throws {
            let values = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                metric: try values.decode(ScalingMetric.self, forKey: .metric),
                target: try values.decode(Double.self, forKey: .target),
                tolerance: try values.decodeIfPresent(Double.self, forKey: .tolerance) ?? 0.1,
                metricWindowSeconds: try values.decodeIfPresent(Double.self, forKey: .metricWindowSeconds) ?? 15,
                scaleUpStabilisationSeconds: try values.decodeIfPresent(
                    Double.self, forKey: .scaleUpStabilisationSeconds) ?? 0,
                scaleDownStabilisationSeconds: try values.decodeIfPresent(
                    Double.self, forKey: .scaleDownStabilisationSeconds) ?? 300)
        }
    }

    /// `ThresholdPolicy`'s parameters; times in seconds on the wire.
    public struct ThresholdParameters: Sendable, Equatable, Codable {
        public var metric: ScalingMetric
        public var comparison: ThresholdPolicy.Comparison
        /// Percent.
        public var threshold: Double
        public var durationSeconds: Double
        public var step: Int
        public var cooldownSeconds: Double

        public init(
            metric: ScalingMetric, comparison: ThresholdPolicy.Comparison, threshold: Double, durationSeconds: Double,
            step: Int, cooldownSeconds: Double
        ) {
            self.metric = metric
            self.comparison = comparison
            self.threshold = threshold
            self.durationSeconds = durationSeconds
            self.step = step
            self.cooldownSeconds = cooldownSeconds
        }

        enum CodingKeys: String, CodingKey {
            case metric, comparison, threshold, step
            case durationSeconds = "duration_seconds"
            case cooldownSeconds = "cooldown_seconds"
        }
    }

    enum CodingKeys: String, CodingKey {
        case type
    }

    /// `{"type": "target_tracking", "metric": "cpu", "target": 60, …}` or `{"type": "threshold", …}`.
    public init(from decoder: any Decoder) throws {
        let kind = try decoder.container(keyedBy: CodingKeys.self).decode(String.self, forKey: .type)
        switch kind {
        case "target_tracking": self = .targetTracking(try TargetTrackingParameters(from: decoder))
        case "threshold": self = .threshold(try ThresholdParameters(from: decoder))
        default:
            throw DecodingError.dataCorrupted(
                DecodingError.Context(
                    codingPath: decoder.codingPath + [CodingKeys.type],
                    debugDescription: "policy type \"\(kind)\": target_tracking or threshold"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .targetTracking(let parameters):
            try container.encode("target_tracking", forKey: .type)
            try parameters.encode(to: encoder)
        case .threshold(let parameters):
            try container.encode("threshold", forKey: .type)
            try parameters.encode(to: encoder)
        }
    }

    public var metric: ScalingMetric {
        switch self {
        case .targetTracking(let parameters): parameters.metric
        case .threshold(let parameters): parameters.metric
        }
    }

    /// How far back the policy looks at the metric.
    public var windowMilliseconds: Int64 {
        switch self {
        case .targetTracking(let parameters): Self.milliseconds(parameters.metricWindowSeconds)
        // The breach must last `duration`; a little more shows where the run of breaches began.
        case .threshold(let parameters): Self.milliseconds(parameters.durationSeconds) + 5_000
        }
    }

    /// The pure rule with the group's bounds; refused (`invalidArgument`) as its `init` refuses.
    public func targetTracking(min: Int, max: Int) throws(ControlError) -> TargetTracking? {
        guard case .targetTracking(let parameters) = self else { return nil }
        return try TargetTracking(
            target: parameters.target, tolerance: parameters.tolerance,
            scaleUpStabilisationMilliseconds: try Self.checkedMilliseconds(
                parameters.scaleUpStabilisationSeconds, "scale_up_stabilisation_seconds"),
            scaleDownStabilisationMilliseconds: try Self.checkedMilliseconds(
                parameters.scaleDownStabilisationSeconds, "scale_down_stabilisation_seconds"),
            metricWindowMilliseconds: try Self.checkedMilliseconds(
                parameters.metricWindowSeconds, "metric_window_seconds"),
            minReplicas: min, maxReplicas: max)
    }

    /// The pure rule with the group's bounds; refused (`invalidArgument`) as its `init` refuses.
    public func threshold(min: Int, max: Int) throws(ControlError) -> ThresholdPolicy? {
        guard case .threshold(let parameters) = self else { return nil }
        return try ThresholdPolicy(
            metric: parameters.metric.rawValue, comparison: parameters.comparison, threshold: parameters.threshold,
            durationMilliseconds: try Self.checkedMilliseconds(parameters.durationSeconds, "duration_seconds"),
            step: parameters.step,
            cooldownMilliseconds: try Self.checkedMilliseconds(parameters.cooldownSeconds, "cooldown_seconds"),
            minReplicas: min, maxReplicas: max)
    }

    /// Refused unless the policy's numbers make a rule with these bounds.
    public func validate(min: Int, max: Int) throws(ControlError) {
        _ = try targetTracking(min: min, max: max)
        _ = try threshold(min: min, max: max)
    }

    static func milliseconds(_ seconds: Double) -> Int64 {
        guard seconds.isFinite else { return 0 }
        return Int64((Swift.min(Swift.max(seconds, 0), 86_400 * 366) * 1000).rounded())
    }

    static func checkedMilliseconds(_ seconds: Double, _ field: String) throws(ControlError) -> Int64 {
        guard seconds.isFinite, seconds >= 0, seconds <= 86_400 else {
            throw ControlError(.invalidArgument, "policy \(field) \(seconds): 0 to 86400 seconds")
        }
        return milliseconds(seconds)
    }
}

/// What a client asks for when it creates a group.
public struct ScalingGroupSubmission: Sendable, Equatable {
    public var project: String
    public var name: String
    public var flavor: String
    public var image: String
    public var min: Int
    public var max: Int
    /// Where the group starts (nil: `min`).
    public var desired: Int?
    /// Suspended members kept ready (`ScalingGroup.warm`).
    public var warm: Int
    public var policy: ScalingPolicy
    public var scaleIn: ScaleInOrder

    public init(
        project: String, name: String, flavor: String, image: String, min: Int, max: Int, desired: Int? = nil,
        policy: ScalingPolicy, scaleIn: ScaleInOrder = .newest, warm: Int = 0
    ) {
        self.warm = warm
        self.project = project
        self.name = name
        self.flavor = flavor
        self.image = image
        self.min = min
        self.max = max
        self.desired = desired
        self.policy = policy
        self.scaleIn = scaleIn
    }
}

/// One change of a group's desired count: the group's timeline.
public struct ScalingAction: Sendable, Equatable {
    public var sequence: Int64
    public var groupID: String
    public var time: Date
    public var from: Int
    public var to: Int
    public var reason: String

    public init(sequence: Int64, groupID: String, time: Date, from: Int, to: Int, reason: String) {
        self.sequence = sequence
        self.groupID = groupID
        self.time = time
        self.from = from
        self.to = to
        self.reason = reason
    }
}

extension ControlRules {
    /// The largest group.
    public static let largestGroup = 1000

    /// The group to record, or why not (pure; the store checks the project, flavor and image and
    /// that the name is free in the transaction that records it).
    public static func newGroup(_ submission: ScalingGroupSubmission, id: String, now: Date) throws(ControlError)
        -> ScalingGroup
    {
        guard (try? GuestName(submission.name + "-999999999999")) != nil, !submission.name.isEmpty else {
            throw ControlError(
                .invalidArgument,
                "name \"\(submission.name)\": a group's name is lowercase letters, digits, '.', '_' and '-',"
                    + " starting with a letter or digit, at most 50 characters (its members are NAME-N)")
        }
        guard submission.min >= 0, submission.min <= submission.max, submission.max <= largestGroup else {
            throw ControlError(
                .invalidArgument,
                "min \(submission.min), max \(submission.max): a group needs 0 ≤ min ≤ max ≤ \(largestGroup)")
        }
        let desired = submission.desired ?? submission.min
        try checkDesired(desired, min: submission.min, max: submission.max)
        try submission.policy.validate(min: submission.min, max: submission.max)
        guard submission.warm >= 0, submission.warm <= submission.max else {
            throw ControlError(
                .invalidArgument,
                "warm \(submission.warm): a group keeps 0 to max (\(submission.max)) suspended members ready")
        }
        return ScalingGroup(
            id: id, project: submission.project, name: submission.name, flavor: submission.flavor,
            image: submission.image, min: submission.min, max: submission.max, desired: desired,
            policy: submission.policy, scaleIn: submission.scaleIn, state: .active, createdAt: now, lastActionAt: nil,
            warm: submission.warm)
    }

    public static func checkDesired(_ desired: Int, min: Int, max: Int) throws(ControlError) {
        guard desired >= min, desired <= max else {
            throw ControlError(
                .invalidArgument,
                "desired \(desired) is outside the group's bounds [\(min), \(max)]: give a count within them")
        }
    }

    /// The policy column: the policy and the scale-in order as one JSON object.
    public static func policyJSON(_ policy: ScalingPolicy, scaleIn: ScaleInOrder) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(StoredPolicy(policy: policy, scaleIn: scaleIn))) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The policy column read back; nil if it is not one this Ferry wrote.
    public static func policy(fromJSON text: String) -> (ScalingPolicy, ScaleInOrder)? {
        guard let stored = try? JSONDecoder().decode(StoredPolicy.self, from: Data(text.utf8)) else { return nil }
        return (stored.policy, stored.scaleIn)
    }

    struct StoredPolicy: Codable {
        var policy: ScalingPolicy
        var scaleIn: ScaleInOrder

        enum CodingKeys: String, CodingKey {
            case policy
            case scaleIn = "scale_in"
        }
    }
}
