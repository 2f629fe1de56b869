"""The report's words in Vietnamese (the default) and English."""

from __future__ import annotations

LANGUAGES = ("vi", "en")

_TEXT: dict[str, tuple[str, str]] = {
    "title": ("Báo cáo tuân thủ Quy chế thư điện tử công vụ", "Official mail compliance report"),
    "period": ("Kỳ báo cáo", "Period"),
    "until_excl": ("đến trước ngày", "until (exclusive)"),
    "agency_filter": ("Chỉ cơ quan", "Agency only"),
    "summary": ("Tổng quan", "Summary"),
    "records": ("Bản ghi trong kỳ", "Records in the period"),
    "events": ("Sự kiện", "Events"),
    "malformed": ("Bản ghi sai định dạng (không tính)", "Malformed records (not counted)"),
    "verified": ("Bản ghi đã kiểm tra", "Records verified"),
    "hosts": ("Máy chủ", "Hosts"),
    "integrity": ("Tính toàn vẹn nhật ký kiểm toán", "Audit chain integrity"),
    "host": ("Máy chủ", "Host"),
    "status": ("Trạng thái", "Status"),
    "files": ("Tệp", "Files"),
    "intact": ("Nguyên vẹn", "Intact"),
    "broken": ("BỊ HỎNG", "BROKEN"),
    "unreachable": ("KHÔNG THU THẬP ĐƯỢC", "NOT COLLECTED"),
    "first_bad": ("Dòng hỏng đầu tiên", "First bad line"),
    "clause": ("Khoản", "Clause"),
    "clauses_title": ("Sự kiện theo tuần, theo khoản của Quy chế", "Events per week, per clause of the decision"),
    "week_of": ("Tuần bắt đầu", "Week of"),
    "action_reject": ("từ chối", "reject"),
    "action_hold": ("giữ lại", "hold"),
    "action_tag": ("gắn nhãn", "tag"),
    "action_log": ("chỉ ghi nhận", "log only"),
    "agencies": ("Theo cơ quan", "Per agency"),
    "agency": ("Cơ quan", "Agency"),
    "name": ("Tên", "Name"),
    "accounts": ("Tài khoản", "Accounts"),
    "per_100": ("Sự kiện / 100 tài khoản", "Events per 100 accounts"),
    "ranking": ("Xếp hạng cơ quan theo số sự kiện trên 100 tài khoản",
                "Agencies ranked by events per 100 accounts"),
    "ranking_needs_directory": ("Cần dữ liệu thư mục (số tài khoản) để xếp hạng.",
                                "Ranking needs the directory's account counts."),
    "registrations": ("Tài khoản đăng ký dịch vụ trực tuyến nhiều lần (khoản 1.3(3))",
                      "Accounts with repeated online-service registrations (clause 1.3(3))"),
    "address": ("Địa chỉ", "Address"),
    "count": ("Số lần", "Count"),
    "first": ("Lần đầu", "First"),
    "last": ("Lần cuối", "Last"),
    "none": ("Không có.", "None."),
    "freemail": ("Giám sát khoản 1.3(2): thư gửi tới hộp thư miễn phí (chỉ đếm, không có nội dung)",
                 "Clause 1.3(2) monitoring: mail to free-mail domains (counts only, never contents)"),
    "outbound_freemail": ("Thư gửi tới hộp thư miễn phí", "Outbound to free mail"),
    "blocked_forwarding": ("Chuyển tiếp tự động bị chặn", "Blocked forwarding attempts"),
    "hygiene": ("Vệ sinh tài khoản", "Account hygiene"),
    "active": ("Đang hoạt động", "Active"),
    "disabled": ("Đã khóa", "Disabled"),
    "disabled_receiving": ("Tài khoản đã khóa vẫn nhận thư", "Disabled accounts still receiving mail"),
    "messages_to_disabled": ("Thư gửi tới tài khoản đã khóa", "Messages to disabled accounts"),
    "directory_missing": ("Không đọc được thư mục LDAP; báo cáo không có số tài khoản và trạng thái tài khoản",
                          "The directory could not be read; the report has no account counts or states"),
    "hygiene_missing": ("Chưa có (cần dữ liệu của Dovecot): tài khoản chưa từng đăng nhập, hộp thư dùng trên 90% "
                        "dung lượng.",
                        "Not included (needs Dovecot's data): accounts never logged in, mailboxes over 90% of "
                        "quota."),
    "footer": ("Báo cáo chỉ chứa số đếm, mã quy tắc và địa chỉ; không chứa nội dung thư.",
               "This report holds counts, rule IDs and addresses only; never message contents."),
}


def texts(lang: str) -> dict[str, str]:
    index = LANGUAGES.index(lang)
    return {key: pair[index] for key, pair in _TEXT.items()}
