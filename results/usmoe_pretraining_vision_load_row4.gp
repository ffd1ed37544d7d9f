set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row4.png.tmp.20991'
$m << EOD
0.0972886 0.134191 0.112822 0.138189 0.186811 0.115947 0.107399 0.107353
0.0878217 0.157169 0.0936121 0.1108 0.194669 0.123438 0.124403 0.108088
EOD
set title "USMoE, k=1: load (last epoch, first seed)"
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
