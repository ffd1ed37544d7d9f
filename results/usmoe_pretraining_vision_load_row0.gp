set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row0.png.tmp.15986'
$m << EOD
0.124449 0.0902574 0.104596 0.0880515 0.102298 0.145267 0.214982 0.130101
0.0977022 0.115074 0.0857077 0.0832721 0.218107 0.149862 0.118474 0.131801
EOD
set title "Token choice, k=1: load (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
